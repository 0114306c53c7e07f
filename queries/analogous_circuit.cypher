// name: analogous_circuit
// description: The circuit of slice $slice in the complete checkpoint $checkpoint (channels whose mean
//   ablation raises the slice's loss by at least $min_effect) found in every complete checkpoint of
//   another model that holds the same slice (the same data by content hash, else a slice of the same
//   name): for each member, its most similar ANALOGOUS channel there, that channel's effect on the
//   slice, whether it is in that checkpoint's circuit, and the share of members whose analogue is.
// returns: model, checkpoint, same_data, channel, effect, analogue, similarity, analogue_effect,
//   in_circuit, share_in_circuit
// params: $checkpoint (string), $slice (string), $min_effect (float)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(s:DataSlice {name: $slice})
WHERE a.ablation >= $min_effect
WITH s, collect({block: b, effect: a.ablation}) AS members
MATCH (t:DataSlice) WHERE t.id = s.id OR t.name = s.name
MATCH (elsewhere:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(:Block)-[:ACTIVE_ON]->(t)
WHERE elsewhere.model_id <> members[0].block.model_id
WITH DISTINCT s, members, elsewhere, t ORDER BY t.id = s.id DESC
WITH s, members, elsewhere, collect(t)[0] AS t
UNWIND members AS member
WITH s, elsewhere, t, member.block AS b, member.effect AS effect
OPTIONAL MATCH (b)-[link:ANALOGOUS]-(other:Block)<-[:HAS_BLOCK]-(elsewhere)
WITH s, elsewhere, t, b, effect, other, link ORDER BY link.similarity DESC
WITH s, elsewhere, t, b, effect, collect({block: other, similarity: link.similarity})[0] AS best
WITH s, elsewhere, t, b, effect, best.block AS analogue, best.similarity AS similarity
OPTIONAL MATCH (analogue)-[o:ACTIVE_ON]->(t)
WITH s, elsewhere, t, b, effect, analogue, similarity, o.ablation AS analogue_effect,
     coalesce(o.ablation >= $min_effect, false) AS in_circuit
WITH elsewhere, t.id = s.id AS same_data,
     collect({channel: b, effect: effect, analogue: analogue, similarity: similarity,
              analogue_effect: analogue_effect, in_circuit: in_circuit}) AS rows
UNWIND rows AS row
RETURN elsewhere.model_id AS model, elsewhere.id AS checkpoint, same_data, row.channel.name AS channel,
       row.effect AS effect, row.analogue.name AS analogue, row.similarity AS similarity,
       row.analogue_effect AS analogue_effect, row.in_circuit AS in_circuit,
       toFloat(size([r IN rows WHERE r.in_circuit])) / size(rows) AS share_in_circuit
ORDER BY model, checkpoint, row.channel.order
