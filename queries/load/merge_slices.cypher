// name: merge_slices
// description: Upsert DataSlices by id (name and token hash), shared by every checkpoint ingested on them.
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MERGE (d:DataSlice {id: row.id})
SET d += row
