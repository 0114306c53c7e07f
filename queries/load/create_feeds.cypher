// name: create_feeds
// description: Create FEEDS from a writer's out Subspace to a reader's read Subspace. Each row is a list
//   [source, target, role, attribution, attribution_signed, weight, strength, flow, patched] whose ends are
//   positions in $ids (the checkpoint's Subspace ids): lists of numbers pack and travel far faster than
//   maps of strings, and the relationship type is fixed text.
// returns: nothing
// params: $ids (list of strings), $rows (list of lists)
UNWIND $rows AS row
MATCH (a:Subspace {id: $ids[row[0]]}), (b:Subspace {id: $ids[row[1]]})
CREATE (a)-[:FEEDS {role: row[2], attribution: row[3], attribution_signed: row[4], weight: row[5], strength: row[6], flow: row[7], patched: row[8]}]->(b)
