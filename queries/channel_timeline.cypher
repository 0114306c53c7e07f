// name: channel_timeline
// description: One channel across a model's checkpoints, following MATCHES back and forward from
//   $checkpoint: where it is matched, how similar it stays, and its behaviour at each step.
// returns: checkpoint, step, similarity_to_previous, induction, previous_token, fidelity
// params: $checkpoint (string), $channel (string)
MATCH (start:Block {id: $checkpoint + '/' + $channel})
MATCH (c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WHERE b = start OR EXISTS { (start)-[:MATCHES*1..]-(b) }
OPTIONAL MATCH (:Block)-[m:MATCHES]->(b)
RETURN c.id AS checkpoint, c.step AS step, m.similarity AS similarity_to_previous,
       b.induction AS induction, b.previous_token AS previous_token, b.fidelity AS fidelity
ORDER BY step
