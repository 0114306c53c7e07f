// name: checkpoint_channels
// description: The channels of one checkpoint in channel order, with the rank of each role and their fidelity.
// returns: channel, order, kind, layer, head, fidelity, ranks (role=rank), induction, previous_token
// params: $checkpoint (string)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[:HAS_SUBSPACE]->(s:Subspace)
WITH b, s ORDER BY s.role
WITH b, collect(s.role + '=' + toString(s.rank)) AS ranks
RETURN b.name AS channel, b.order AS order, b.kind AS kind, b.layer AS layer, b.head AS head, b.fidelity AS fidelity,
       ranks, b.induction AS induction, b.previous_token AS previous_token
ORDER BY order
