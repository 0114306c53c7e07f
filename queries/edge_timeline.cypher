// name: edge_timeline
// description: The edge $writer -> $reader (read role $role) of model $model across its complete checkpoints,
//   in step order: its attribution and patched effect on slice $slice (null where the loader pruned the
//   edge or it was not patched) and its weight, strength and flow on all the data.
// returns: checkpoint, step, attribution, patched, weight, strength, flow
// params: $model (string), $slice (string), $writer (string), $reader (string), $role (string)
MATCH (:Model {id: $model})-[:HAS_CHECKPOINT]->(c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(w:Block {name: $writer})
MATCH (c)-[:HAS_BLOCK]->(r:Block {name: $reader})-[:HAS_SUBSPACE]->(read:Subspace {role: $role})
OPTIONAL MATCH (w)-[:HAS_SUBSPACE]->(:Subspace {role: 'out'})-[f:FEEDS]->(read)
OPTIONAL MATCH (w)-[:HAS_SUBSPACE]->(:Subspace {role: 'out'})-[g:FLOWS_ON {slice: $slice}]->(read)
RETURN c.id AS checkpoint, c.step AS step, g.attribution AS attribution, g.patched AS patched, f.weight AS weight,
       f.strength AS strength, f.flow AS flow
ORDER BY step
