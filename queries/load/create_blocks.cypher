// name: create_blocks
// description: Create a checkpoint's Blocks from the artifact's blocks rows, each also labelled with its
//   kind's label ($kind_labels maps kind to label).
// returns: nothing
// params: $checkpoint_id (string), $rows (list of maps), $kind_labels (map)
MATCH (c:Checkpoint {id: $checkpoint_id})
UNWIND $rows AS row
CREATE (b:Block)
SET b = row, b.checkpoint_id = $checkpoint_id, b:$($kind_labels[row.kind])
CREATE (c)-[:HAS_BLOCK]->(b)
