// name: catalog_overview
// description: Every model with its complete checkpoints, in step order, and what each holds.
// returns: model, checkpoint, step, loss, fidelity, rank_fraction, blocks, edges
// params: (none)
MATCH (m:Model)-[:HAS_CHECKPOINT]->(c:Checkpoint {status: 'complete'})
RETURN m.name AS model, c.id AS checkpoint, c.step AS step, c.loss AS loss, c.fidelity AS fidelity,
       c.rank_fraction AS rank_fraction,
       COUNT { (c)-[:HAS_BLOCK]->() } AS blocks,
       COUNT { (:Subspace {checkpoint_id: c.id})-[:FEEDS]->() } AS edges
ORDER BY model, step
