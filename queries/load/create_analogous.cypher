// name: create_analogous
// description: Create (or update) the ANALOGOUS links in $rows, each from Block row.source to Block
//   row.target with its similarity and shared features.
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (a:Block {id: row.source})
MATCH (b:Block {id: row.target})
MERGE (a)-[link:ANALOGOUS]->(b)
SET link.similarity = row.similarity, link.features = row.features
