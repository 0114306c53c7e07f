// name: delete_live_content
// description: Delete the Blocks and Subspaces of the published version of $checkpoint_id with their
//   relationships, inside the publish transaction (MATCHES to its neighbours are linked again by
//   link_matches in the same transaction).
// returns: nothing
// params: $checkpoint_id (string)
MATCH (:Checkpoint {id: $checkpoint_id})-[:HAS_BLOCK]->(b:Block)
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
WITH b, collect(s) AS subspaces
FOREACH (s IN subspaces | DETACH DELETE s)
DETACH DELETE b
