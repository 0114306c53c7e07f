// name: circuit_graph
// description: The circuit of `circuit` shaped for Neo4j Browser: the Block nodes, the slice, and the
//   subspace-level FLOWS_ON relationships between circuit channels whose effect (patched where measured, else
//   attribution) is at least $min_attribution, as in `circuit` (paste into Browser to draw it).
// returns: blocks, slice, edges (nodes and relationships, not a table)
// params: $checkpoint (string), $slice (string), $min_effect (float), $min_attribution (float >= 0)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(d:DataSlice {name: $slice})
WHERE a.ablation >= $min_effect
WITH d, collect(b) AS blocks, collect(a) AS active
CALL (blocks) {
  UNWIND blocks AS writer
  MATCH p = (writer)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(:Subspace)<-[:HAS_SUBSPACE]-(reader:Block)
  WHERE reader IN blocks AND coalesce(f.patched, f.attribution) >= $min_attribution
  RETURN collect(p) AS edges
}
RETURN blocks, d AS slice, active, edges
