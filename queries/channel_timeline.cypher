// name: channel_timeline
// description: One channel across a model's checkpoints, following MATCHES back and forward from
//   channel $channel of the complete checkpoint $checkpoint: where it is matched, how similar it stays,
//   and its behaviour at each complete step.
// returns: checkpoint, step, similarity_to_previous, induction, previous_token, fidelity
// params: $checkpoint (string), $channel (string)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(start:Block {id: $checkpoint + '/' + $channel})
MATCH (start)-[:MATCHES*0..]-(b:Block)
WITH DISTINCT b
MATCH (c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(b)
OPTIONAL MATCH (:Block)-[m:MATCHES]->(b)
RETURN c.id AS checkpoint, c.step AS step, m.similarity AS similarity_to_previous,
       b.induction AS induction, b.previous_token AS previous_token, b.fidelity AS fidelity
ORDER BY step
