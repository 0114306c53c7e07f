// name: create_flows_on
// description: Create FLOWS_ON (an edge's attribution on one slice) from a writer's out Subspace to a
//   reader's read Subspace. Each row is a list [source, target, slice, role, attribution,
//   attribution_signed, patched] whose ends are positions in $ids, as in create_feeds.
// returns: nothing
// params: $ids (list of strings), $rows (list of lists)
UNWIND $rows AS row
MATCH (a:Subspace {id: $ids[row[0]]}), (b:Subspace {id: $ids[row[1]]})
CREATE (a)-[:FLOWS_ON {slice: row[2], role: row[3], attribution: row[4], attribution_signed: row[5], patched: row[6]}]->(b)
