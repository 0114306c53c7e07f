// name: top_edges
// description: The strongest edges of a checkpoint by weight, flow, attribution or patched effect (on the
//   ingest data). By patched, only the edges whose exact effect was measured (the others have none).
// returns: writer, reader, role, weight, flow, attribution, patched, strength, writer_kind, reader_kind
// params: $checkpoint (string), $by ('weight' | 'flow' | 'attribution' | 'patched'), $limit (integer >= 1)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
WHERE $by <> 'patched' OR f.patched IS NOT NULL
RETURN a.name AS writer, b.name AS reader, f.role AS role, f.weight AS weight, f.flow AS flow,
       f.attribution AS attribution, f.patched AS patched, f.strength AS strength, a.kind AS writer_kind,
       b.kind AS reader_kind
ORDER BY CASE $by WHEN 'weight' THEN f.weight WHEN 'flow' THEN f.flow WHEN 'patched' THEN f.patched
         ELSE f.attribution END DESC, a.order, b.order, role
LIMIT toInteger($limit)
