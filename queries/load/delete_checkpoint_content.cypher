// name: delete_checkpoint_content
// description: Delete the Blocks, Subspaces and Examples of a staging checkpoint that will not be published
//   (a failed or abandoned load), with their relationships, in batches (run in an implicit transaction).
// returns: nothing
// params: $checkpoint_id (string)
MATCH (b:Block {checkpoint_id: $checkpoint_id})
CALL (b) {
  OPTIONAL MATCH (b)-[:HAS_SUBSPACE|HAS_EXAMPLE]->(part)
  DETACH DELETE part
  WITH DISTINCT b
  DETACH DELETE b
} IN TRANSACTIONS OF 500 ROWS
