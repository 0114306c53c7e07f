// name: components
// description: Connected components of a checkpoint's channel graph over edges with weight >= $min_weight,
//   in pure Cypher: min-label propagation over adjacency lists, repeated until no label changes
//   (it never enumerates paths). A channel without such an edge is a component of its own.
//   Channels are numbered in elementId order, so a neighbour's number is a binary search away:
//   building the adjacency costs O(E log N), each propagation round O(N + E).
// returns: component (its first member in channel order), size, channels
// params: $checkpoint (string), $min_weight (float in [0, 1])
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WITH b ORDER BY elementId(b)
WITH collect(b) AS blocks, collect(elementId(b)) AS keys
WITH blocks, keys, size(keys) AS n, range(0, toInteger(ceil(log(size(keys) + 1) / log(2)))) AS steps
WITH blocks, n,
     [b IN blocks | [key IN COLLECT {
          MATCH (b)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]-(:Subspace)<-[:HAS_SUBSPACE]-(c:Block)
          WHERE f.weight >= $min_weight
          RETURN DISTINCT elementId(c)
        } | reduce(bounds = [0, n], step IN steps |
              CASE WHEN bounds[1] - bounds[0] <= 1 THEN bounds
                   WHEN keys[(bounds[0] + bounds[1]) / 2] <= key THEN [(bounds[0] + bounds[1]) / 2, bounds[1]]
                   ELSE [bounds[0], (bounds[0] + bounds[1]) / 2] END)[0]]] AS adjacency
WITH blocks, n,
     reduce(state = {labels: range(0, n - 1), done: false}, round IN range(1, n) |
       CASE WHEN state.done THEN state ELSE
         [next IN [[i IN range(0, n - 1) | reduce(m = state.labels[i], j IN adjacency[i] |
                     CASE WHEN state.labels[j] < m THEN state.labels[j] ELSE m END)]] |
          {labels: next, done: next = state.labels}][0]
       END) AS final
UNWIND range(0, n - 1) AS i
WITH final.labels[i] AS root, blocks[i] AS block
ORDER BY block.order
WITH root, collect(block.name) AS channels, min(block.order) AS first
RETURN channels[0] AS component, size(channels) AS size, channels
ORDER BY size DESC, first
