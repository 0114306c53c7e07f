// name: delete_checkpoint_content
// description: Delete the Blocks and Subspaces of a staging checkpoint that will not be published (a
//   failed or abandoned load), with their relationships, in batches (run in an implicit transaction).
// returns: nothing
// params: $checkpoint_id (string)
MATCH (b:Block {checkpoint_id: $checkpoint_id})
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
WITH b, collect(s) AS subspaces
CALL (b, subspaces) {
  FOREACH (s IN subspaces | DETACH DELETE s)
  DETACH DELETE b
} IN TRANSACTIONS OF 500 ROWS
