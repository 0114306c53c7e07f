// name: analogous_candidates
// description: The Blocks that the ANALOGOUS links of complete checkpoint $checkpoint_id can join: its own
//   and those of the complete checkpoints of other models whose fingerprints have the same features.
// returns: block_id, checkpoint_id, model_id, kind, fingerprint
// params: $checkpoint_id (string)
MATCH (c:Checkpoint {id: $checkpoint_id, status: 'complete'})
MATCH (other:Checkpoint {status: 'complete'})
WHERE other = c OR (other.model_id <> c.model_id AND other.fingerprint_features = c.fingerprint_features)
MATCH (other)-[:HAS_BLOCK]->(b:Block)
RETURN b.id AS block_id, other.id AS checkpoint_id, other.model_id AS model_id, b.kind AS kind,
       b.fingerprint AS fingerprint
