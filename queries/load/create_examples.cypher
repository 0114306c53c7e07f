// name: create_examples
// description: Create each Block's Examples (its top tokens on a slice, with their context) under it; each
//   row names its block_id and carries the Example's properties.
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (b:Block {id: row.block_id})
CREATE (e:Example)
SET e = row.properties
CREATE (b)-[:HAS_EXAMPLE]->(e)
