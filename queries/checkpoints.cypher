// name: checkpoints
// description: The complete checkpoints of model $model (every model when $model is null), in step order.
// returns: model, checkpoint, label, step, tokens_seen, loss, fidelity, fidelity_reason, rank_fraction, rank_rule, searched_rank_fraction, searched_fidelity, importance, ingest_slice
// params: $model (string or null)
MATCH (m:Model)-[:HAS_CHECKPOINT]->(c:Checkpoint {status: 'complete'})
WHERE $model IS NULL OR m.id = $model
RETURN m.id AS model, c.id AS checkpoint, c.label AS label, c.step AS step, c.tokens_seen AS tokens_seen,
       c.loss AS loss, c.fidelity AS fidelity, c.fidelity_reason AS fidelity_reason, c.rank_fraction AS rank_fraction,
       c.rank_rule AS rank_rule, c.searched_rank_fraction AS searched_rank_fraction, c.searched_fidelity AS searched_fidelity,
       coalesce(c.importance, 'fisher') AS importance, c.ingest_slice AS ingest_slice
ORDER BY model, step
