// name: similar_channels
// description: Channels of complete checkpoints anywhere in the catalog whose behaviour fingerprint is
//   closest (euclidean similarity 1 / (1 + d^2)) to that of channel $channel of the complete checkpoint
//   $checkpoint, through the vector index on Block.fingerprint. The index is asked for enough candidates that the probe and the
//   blocks of checkpoints still loading cannot crowd out the $limit answers.
// returns: checkpoint, channel, kind, similarity
// params: $checkpoint (string), $channel (string), $limit (integer in [1, 100000])
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(probe:Block {id: $checkpoint + '/' + $channel})
OPTIONAL MATCH (hidden:Checkpoint) WHERE hidden.status <> 'complete'
OPTIONAL MATCH (hidden)-[:HAS_BLOCK]->(invisible:Block)
WITH probe, count(invisible) AS invisible
CALL db.index.vector.queryNodes('block_fingerprint_euclidean', toInteger($limit) + 1 + invisible, probe.fingerprint) YIELD node, score
WHERE node <> probe AND EXISTS { (:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(node) }
RETURN node.checkpoint_id AS checkpoint, node.name AS channel, node.kind AS kind, score AS similarity
ORDER BY similarity DESC, checkpoint, node.order
LIMIT toInteger($limit)
