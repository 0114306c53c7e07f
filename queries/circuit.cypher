// name: circuit
// description: The circuit of a checkpoint on a data slice: the channels whose removal (mean ablation)
//   raises the slice's loss by at least $min_effect (in channel order), and the edges between them whose effect on
//   the slice is at least $min_attribution: the exact patched effect where it was measured, else the first-order
//   attribution (both in nats). A member without such an edge comes with a null reader. Every row carries
//   the circuit's faithfulness: the share of the slice's behaviour its channels keep with every other channel
//   mean-ablated (1 = the circuit alone does the work; null for a catalog loaded before it was measured).
// returns: writer, writer_effect, reader, role, attribution, patched, faithfulness
// params: $checkpoint (string), $slice (string), $min_effect (float, default 0.1), $min_attribution (float >= 0, default 0.02)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice})
WHERE a.ablation >= $min_effect
WITH b, a ORDER BY a.effect_rank
WITH collect(b) AS members, collect(a.ablation) AS effects, collect(a)[-1].faithfulness AS faithfulness
UNWIND range(0, size(members) - 1) AS i
WITH members, members[i] AS writer, effects[i] AS writer_effect, faithfulness
OPTIONAL MATCH (writer)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(:Subspace)<-[:HAS_SUBSPACE]-(reader:Block)
WHERE reader IN members AND coalesce(f.patched, f.attribution) >= $min_attribution
WITH writer, writer_effect, reader, f, faithfulness ORDER BY writer.order, coalesce(f.patched, f.attribution) DESC, reader.order, f.role
RETURN writer.name AS writer, writer_effect, reader.name AS reader, f.role AS role, f.attribution AS attribution,
       f.patched AS patched, faithfulness
