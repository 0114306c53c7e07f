// name: adopt_blocks
// description: Move the Blocks of staging checkpoint $staging_id to checkpoint $checkpoint_id and give
//   them and their Subspaces their published ids (<checkpoint>/<block>, <block>/<role>).
// returns: nothing
// params: $staging_id (string), $checkpoint_id (string)
MATCH (:Checkpoint {id: $staging_id})-[h:HAS_BLOCK]->(b:Block)
MATCH (c:Checkpoint {id: $checkpoint_id})
DELETE h
CREATE (c)-[:HAS_BLOCK]->(b)
SET b.id = c.id + '/' + b.name, b.checkpoint_id = c.id
WITH b
MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
SET s.id = b.id + '/' + s.role, s.block_id = b.id, s.checkpoint_id = b.checkpoint_id
