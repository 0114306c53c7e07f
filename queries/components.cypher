// name: components
// description: Connected components of a checkpoint's channel graph, in pure Cypher. An edge joins its two
//   channels (direction ignored) when its score is at least $min_share of the largest such score among the
//   checkpoint's edges. The score is $by (null: 'attribution') on all the ingest data; 'patched' (the exact
//   edge effect) joins only the edges it was measured on. With a $slice, the components are the slice's:
//   attribution and patched are the edges' on the slice (weight and flow stay the edges' own), and only the channels whose exact ablation effect on it is at least $min_effect (nats; null:
//   every channel) take part, the members of its circuit. Without a slice every channel takes part. A channel
//   taking part is in one component, alone if no edge joins it; an unknown checkpoint or slice gives no rows.
//   Min-label propagation over adjacency lists, repeated until no label changes (it never enumerates paths).
//   Channels are numbered in elementId order, so a neighbour's number is a binary search away: building the
//   adjacency costs O(E log N), each propagation round O(N + E).
// returns: component (its first member in channel order), size, channels
// params: $checkpoint (string), $slice (string or null), $by ('weight' | 'flow' | 'attribution' | 'patched' or null),
//   $min_share (float in [0, 1]), $min_effect (float or null)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WITH collect(b) AS everyone
CALL (everyone) {
  UNWIND everyone AS b
  MATCH (b)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS|FLOWS_ON]->(:Subspace)
  WHERE CASE WHEN $slice IS NULL OR $by IN ['weight', 'flow'] THEN type(f) = 'FEEDS' ELSE f.slice = $slice END
  RETURN $min_share * max(f[coalesce($by, 'attribution')]) AS least_score
}
UNWIND everyone AS b
WITH b, least_score
WHERE $slice IS NULL OR EXISTS {
  (b)-[act:ACTIVE_ON]->(:DataSlice {name: $slice}) WHERE act.ablation >= coalesce($min_effect, act.ablation)
}
WITH b, least_score ORDER BY elementId(b)
WITH collect(b) AS blocks, collect(elementId(b)) AS keys, least_score
WITH blocks, keys, least_score, size(keys) AS n, range(0, toInteger(ceil(log(size(keys) + 1) / log(2)))) AS steps
WITH blocks, n,
     [b IN blocks | [found IN [key IN COLLECT {
          MATCH (b)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS|FLOWS_ON]-(:Subspace)<-[:HAS_SUBSPACE]-(c:Block)
          WHERE CASE WHEN $slice IS NULL OR $by IN ['weight', 'flow'] THEN type(f) = 'FEEDS' ELSE f.slice = $slice END
            AND f[coalesce($by, 'attribution')] >= least_score
          RETURN DISTINCT elementId(c)
        } | [key, reduce(bounds = [0, n], step IN steps |
              CASE WHEN bounds[1] - bounds[0] <= 1 THEN bounds
                   WHEN keys[(bounds[0] + bounds[1]) / 2] <= key THEN [(bounds[0] + bounds[1]) / 2, bounds[1]]
                   ELSE [bounds[0], (bounds[0] + bounds[1]) / 2] END)[0]]]
        WHERE keys[found[1]] = found[0] | found[1]]] AS adjacency
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
