// name: slices
// description: The data slices that complete checkpoint $checkpoint was scored on (every slice of every
//   complete checkpoint when $checkpoint is null), with how many complete checkpoints use each, and whether
//   the gradients were flat on it for any of them (first-order scores near zero where ablation is not: a
//   saturated model; judge its edges by patched effect).
// returns: slice, name, metric, n_tokens, description, checkpoints, flat_gradients
// params: $checkpoint (string or null)
MATCH (c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(:Block)-[a:ACTIVE_ON]->(d:DataSlice)
WHERE $checkpoint IS NULL OR c.id = $checkpoint
WITH d, count(DISTINCT c) AS checkpoints, coalesce(max(a.flat_gradients), false) AS flat_gradients
RETURN d.id AS slice, d.name AS name, d.metric AS metric, d.n_tokens AS n_tokens, d.description AS description,
       checkpoints, flat_gradients
ORDER BY name, slice
