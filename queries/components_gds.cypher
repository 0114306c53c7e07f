// name: components_gds
// description: The same components as `components`, computed by the Graph Data Science library's WCC
//   (use when the GDS plugin is installed). Projects the channels taking part and their joining edges under a
//   fresh name and drops the projection before returning (nothing taking part projects nothing: no rows).
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
WITH collect(b) AS blocks, least_score
UNWIND blocks AS a
OPTIONAL MATCH (a)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS|FLOWS_ON]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
WHERE CASE WHEN $slice IS NULL OR $by IN ['weight', 'flow'] THEN type(f) = 'FEEDS' ELSE f.slice = $slice END
  AND f[coalesce($by, 'attribution')] >= least_score AND ($slice IS NULL OR b IN blocks)
WITH gds.graph.project('circuit-atlas-components-' + randomUUID(), a, b, {}, {undirectedRelationshipTypes: ['*']}) AS g
WITH g WHERE g IS NOT NULL
CALL gds.wcc.stream(g.graphName) YIELD nodeId, componentId
WITH g, gds.util.asNode(nodeId) AS block, componentId
ORDER BY block.order
WITH g, componentId, collect(block.name) AS channels, min(block.order) AS first
WITH g, collect({first: first, channels: channels}) AS components
CALL gds.graph.drop(g.graphName) YIELD graphName
UNWIND components AS c
RETURN c.channels[0] AS component, size(c.channels) AS size, c.channels AS channels
ORDER BY size DESC, c.first
