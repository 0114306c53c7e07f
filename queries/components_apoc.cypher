// name: components_apoc
// description: The same components as `components`, by union-find over the edge list with APOC's map
//   functions (use when the APOC plugin is installed). APOC core has no WCC procedure and its path
//   expanders filter by type and label, not by a property, so this folds the edges once: each edge joins its
//   ends' components, relabelling the members of the smaller one (union by size). APOC maps are values,
//   so every union copies the two maps: O(E + N U) for U unions.
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
WITH b, least_score ORDER BY b.order
WITH collect(b) AS blocks, collect(b.name) AS names, least_score
CALL (blocks, names, least_score) {
  WITH apoc.map.fromLists(names, names) AS taking_part
  UNWIND blocks AS a
  MATCH (a)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS|FLOWS_ON]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
  WHERE CASE WHEN $slice IS NULL OR $by IN ['weight', 'flow'] THEN type(f) = 'FEEDS' ELSE f.slice = $slice END
    AND f[coalesce($by, 'attribution')] >= least_score AND taking_part[b.name] IS NOT NULL
  RETURN collect(DISTINCT [a.name, b.name]) AS pairs
}
WITH names, reduce(forest = {label: apoc.map.fromLists(names, names),
                             members: apoc.map.fromLists(names, [name IN names | [name]])}, pair IN pairs |
  CASE WHEN forest.label[pair[0]] = forest.label[pair[1]] THEN forest ELSE
    [ends IN [[forest.label[pair[0]], forest.label[pair[1]]]] |
     [join IN [CASE WHEN size(forest.members[ends[0]]) >= size(forest.members[ends[1]]) THEN ends ELSE [ends[1], ends[0]] END] |
      {label: apoc.map.setPairs(forest.label, [member IN forest.members[join[1]] | [member, join[0]]]),
       members: apoc.map.removeKey(apoc.map.setKey(forest.members, join[0],
                                                   forest.members[join[0]] + forest.members[join[1]]), join[1])}
     ][0]
    ][0]
  END) AS forest
UNWIND keys(forest.members) AS root
WITH names, [i IN range(0, size(names) - 1) WHERE forest.label[names[i]] = root] AS members
WITH [i IN members | names[i]] AS channels, members[0] AS first
RETURN channels[0] AS component, size(channels) AS size, channels
ORDER BY size DESC, first
