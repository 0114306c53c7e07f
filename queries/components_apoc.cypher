// name: components_apoc
// description: The same components as `components`, by union-find over the edge list with APOC's map
//   functions (use when the APOC plugin is installed). APOC core has no WCC procedure and its path
//   expanders filter by type and label, not by weight, so this folds the edges once: each edge joins its
//   ends' components, relabelling the members of the smaller one (union by size). APOC maps are values,
//   so every union copies the two maps: O(E + N U) for U unions.
// returns: component (its first member in channel order), size, channels
// params: $checkpoint (string), $min_weight (float in [0, 1])
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WITH b ORDER BY b.order
WITH collect(b.name) AS names
CALL (names) {
  MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(a:Block)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(:Subspace)<-[:HAS_SUBSPACE]-(b:Block)
  WHERE f.weight >= $min_weight
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
