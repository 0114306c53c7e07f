// name: top_slice_edges
// description: The edges of a checkpoint with the largest attribution, or patched effect, on one data slice.
//   By patched, only the edges whose exact effect was measured on the slice (the others have none).
// returns: writer, reader, role, attribution, attribution_signed, patched
// params: $checkpoint (string), $slice (string), $limit (integer >= 1), $by ('attribution' | 'patched', default attribution)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
WHERE $by = 'attribution' OR f.patched IS NOT NULL
RETURN a.name AS writer, b.name AS reader, f.role AS role, f.attribution AS attribution,
       f.attribution_signed AS attribution_signed, f.patched AS patched
ORDER BY CASE $by WHEN 'patched' THEN f.patched ELSE f.attribution END DESC, a.order, b.order, role
LIMIT toInteger($limit)
