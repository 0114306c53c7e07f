// name: components_gds
// description: The same components as `components`, computed by the Graph Data Science library's WCC
//   (use when the GDS plugin is installed). Projects one checkpoint's channel graph under a fresh name
//   and drops it before returning (an unknown checkpoint projects nothing and returns no rows).
// returns: component (its first member in channel order), size, channels
// params: $checkpoint (string), $min_weight (float in [0, 1])
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)
OPTIONAL MATCH (a)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
WHERE f.weight >= $min_weight
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
