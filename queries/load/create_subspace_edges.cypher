// name: create_subspace_edges
// description: Create FEEDS or FLOWS_ON relationships (row.type) from a writer's out Subspace to a reader's
//   read Subspace, with row.properties.
// returns: nothing
// params: $rows (list of maps)
UNWIND $rows AS row
MATCH (a:Subspace {id: row.source}), (b:Subspace {id: row.target})
CREATE (a)-[f:$(row.type)]->(b)
SET f = row.properties
