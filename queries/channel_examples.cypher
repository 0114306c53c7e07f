// name: channel_examples
// description: A channel's top examples: the tokens of the checkpoint's slices where it acts most, by $ranking
//   ('effect': |first-order effect on the slice's metric| at the token, value signed, negative where it
//   helps; 'input': norm of its input in its read subspace), strongest first, each with its context.
// returns: slice, rank, value, sequence, position, text, tokens, focus
// params: $checkpoint (string), $channel (string), $ranking ('effect' | 'input'), $limit (integer >= 1)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(:Block {name: $channel})
      -[:HAS_EXAMPLE]->(e:Example {ranking: $ranking})
RETURN e.slice AS slice, e.rank AS rank, e.value AS value, e.sequence AS sequence, e.position AS position,
       e.text AS text, e.tokens AS tokens, e.focus AS focus
ORDER BY abs(e.value) DESC, slice, rank
LIMIT $limit
