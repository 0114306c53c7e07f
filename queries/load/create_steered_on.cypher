// name: create_steered_on
// description: Create STEERED_ON from a write Subspace to a DataSlice: what pushing one of its directions
//   did to the slice (ingest --steer).
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (s:Subspace {id: row.subspace_id}), (d:DataSlice {id: row.slice_id})
CREATE (s)-[r:STEERED_ON]->(d)
SET r = row.properties
