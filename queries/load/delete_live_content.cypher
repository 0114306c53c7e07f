// name: delete_live_content
// description: Delete the Blocks, Subspaces and Examples of the published version of $checkpoint_id with
//   their relationships, inside the publish transaction (MATCHES to its neighbours are linked again by
//   link_matches in the same transaction).
// returns: nothing
// params: $checkpoint_id (string)
MATCH (:Checkpoint {id: $checkpoint_id})-[:HAS_BLOCK]->(b:Block)
OPTIONAL MATCH (b)-[:HAS_SUBSPACE|HAS_EXAMPLE]->(part)
WITH b, collect(part) AS parts
FOREACH (part IN parts | DETACH DELETE part)
DETACH DELETE b
