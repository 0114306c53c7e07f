// name: adopt_blocks
// description: Move the Blocks of staging checkpoint $staging_id to checkpoint $checkpoint_id and give
//   them, their Subspaces and their Examples their published ids (<checkpoint>/<block>, <block>/<role>,
//   <block>/<slice>/<ranking>/<rank>).
// returns: nothing
// params: $staging_id (string), $checkpoint_id (string)
MATCH (:Checkpoint {id: $staging_id})-[h:HAS_BLOCK]->(b:Block)
MATCH (c:Checkpoint {id: $checkpoint_id})
DELETE h
CREATE (c)-[:HAS_BLOCK]->(b)
SET b.id = c.id + '/' + b.name, b.checkpoint_id = c.id
WITH b
CALL (b) {
  MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
  SET s.id = b.id + '/' + s.role, s.block_id = b.id, s.checkpoint_id = b.checkpoint_id
}
CALL (b) {
  MATCH (b)-[:HAS_EXAMPLE]->(e:Example)
  SET e.id = b.id + '/' + e.slice + '/' + e.ranking + '/' + toString(e.rank)
}
