// name: top_edges
// description: The strongest edges of a checkpoint by weight, flow or attribution (on the ingest data).
// returns: writer, reader, role, weight, flow, attribution, strength, writer_kind, reader_kind
// params: $checkpoint (string), $by ('weight' | 'flow' | 'attribution'), $limit (integer >= 1)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
RETURN a.name AS writer, b.name AS reader, f.role AS role, f.weight AS weight, f.flow AS flow,
       f.attribution AS attribution, f.strength AS strength, a.kind AS writer_kind, b.kind AS reader_kind
ORDER BY CASE $by WHEN 'weight' THEN f.weight WHEN 'flow' THEN f.flow ELSE f.attribution END DESC, a.order, b.order, role
LIMIT toInteger($limit)
