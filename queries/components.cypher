// name: components
// description: Connected components of a checkpoint's channel graph over edges with weight >= $min_weight,
//   in pure Cypher: min-label propagation over adjacency lists, repeated until no label changes
//   (it never enumerates paths). A channel without such an edge is a component of its own.
// returns: component (its first member in catalog order), size, channels
// params: $checkpoint, $min_weight
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WITH b ORDER BY b.layer, coalesce(b.head, -1), b.kind
WITH collect(b.name) AS names
CALL (names) {
  MATCH (:Checkpoint {id: $checkpoint})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
  WHERE f.weight >= $min_weight
  RETURN collect(DISTINCT [a.name, b.name]) AS pairs
}
WITH names, size(names) AS n, [p IN pairs | [i IN range(0, size(names) - 1) WHERE names[i] IN p]] AS edges
WITH names, n, [i IN range(0, n - 1) | [e IN edges WHERE i IN e | CASE WHEN e[0] = i THEN e[1] ELSE e[0] END]] AS adjacency
WITH names, n,
     reduce(state = {labels: range(0, n - 1), done: false}, round IN range(1, n) |
       CASE WHEN state.done THEN state ELSE
         [next IN [[i IN range(0, n - 1) | reduce(m = state.labels[i], j IN adjacency[i] |
                     CASE WHEN state.labels[j] < m THEN state.labels[j] ELSE m END)]] |
          {labels: next, done: next = state.labels}][0]
       END) AS final
UNWIND range(0, n - 1) AS i
WITH names[final.labels[i]] AS root, names[i] AS channel
WITH root, collect(channel) AS channels
RETURN root AS component, size(channels) AS size, channels
ORDER BY size DESC, component
