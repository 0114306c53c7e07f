// name: components_gds
// description: The same components as `components`, computed by the Graph Data Science library's WCC
//   (use when the GDS plugin is installed). Projects one checkpoint's channel graph under a fresh name
//   and drops it before returning (an unknown checkpoint projects nothing and returns no rows).
// returns: component (its first member in catalog order), size, channels
// params: $checkpoint, $min_weight
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)
OPTIONAL MATCH (a)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
WHERE f.weight >= $min_weight
WITH gds.graph.project('circuit-atlas-components-' + randomUUID(), a, b, {}, {undirectedRelationshipTypes: ['*']}) AS g
WITH g WHERE g IS NOT NULL
CALL gds.wcc.stream(g.graphName) YIELD nodeId, componentId
WITH g, gds.util.asNode(nodeId) AS block, componentId
ORDER BY block.layer, coalesce(block.head, -1), block.kind
WITH g, componentId, collect(block.name) AS channels
WITH g, collect(channels) AS components
CALL gds.graph.drop(g.graphName) YIELD graphName
UNWIND components AS channels
RETURN channels[0] AS component, size(channels) AS size, channels
ORDER BY size DESC, component
