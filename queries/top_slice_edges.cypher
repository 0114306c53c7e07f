// name: top_slice_edges
// description: The edges of a checkpoint with the largest attribution on one data slice.
// returns: writer, reader, role, attribution, attribution_signed
// params: $checkpoint (string), $slice (string), $limit (integer >= 1)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
RETURN a.name AS writer, b.name AS reader, f.role AS role, f.attribution AS attribution,
       f.attribution_signed AS attribution_signed
ORDER BY attribution DESC, a.order, b.order, role
LIMIT toInteger($limit)
