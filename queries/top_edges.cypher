// name: top_edges
// description: The strongest edges of a checkpoint by weight, flow or attribution (on the ingest data).
// returns: writer, reader, role, weight, flow, attribution, strength
// params: $checkpoint, $by ('weight', 'flow' or 'attribution'), $limit
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
RETURN a.name AS writer, b.name AS reader, f.role AS role, f.weight AS weight, f.flow AS flow,
       f.attribution AS attribution, f.strength AS strength
ORDER BY CASE $by WHEN 'weight' THEN f.weight WHEN 'flow' THEN f.flow ELSE f.attribution END DESC, writer, reader, role
LIMIT toInteger($limit)
