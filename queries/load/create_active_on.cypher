// name: create_active_on
// description: Create ACTIVE_ON from a Block to a DataSlice with the channel's activity on the slice.
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (b:Block {id: row.block_id}), (d:DataSlice {id: row.slice_id})
CREATE (b)-[a:ACTIVE_ON]->(d)
SET a = row.properties
