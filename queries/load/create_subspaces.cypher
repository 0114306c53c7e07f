// name: create_subspaces
// description: Create Subspaces under their Blocks (each row names its block_id).
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (b:Block {id: row.block_id})
CREATE (s:Subspace)
SET s = row
CREATE (b)-[:HAS_SUBSPACE]->(s)
