// name: similar_channels
// description: Channels anywhere in the catalog whose behaviour fingerprint is closest (cosine) to that
//   of channel $channel of $checkpoint, through the vector index on Block.fingerprint.
// returns: checkpoint, channel, kind, similarity
// params: $checkpoint, $channel, $limit
MATCH (probe:Block {id: $checkpoint + '/' + $channel})
CALL db.index.vector.queryNodes('block_fingerprint', toInteger($limit) + 1, probe.fingerprint) YIELD node, score
WHERE node <> probe AND EXISTS { (:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(node) }
RETURN node.checkpoint_id AS checkpoint, node.name AS channel, node.kind AS kind, score AS similarity
ORDER BY similarity DESC, checkpoint, channel
LIMIT toInteger($limit)
