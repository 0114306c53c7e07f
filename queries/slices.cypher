// name: slices
// description: The data slices that complete checkpoint $checkpoint was scored on (every slice of every
//   complete checkpoint when $checkpoint is null), with how many complete checkpoints use each.
// returns: slice, name, metric, n_tokens, description, checkpoints
// params: $checkpoint (string or null)
MATCH (c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(:Block)-[:ACTIVE_ON]->(d:DataSlice)
WHERE $checkpoint IS NULL OR c.id = $checkpoint
WITH d, count(DISTINCT c) AS checkpoints
RETURN d.id AS slice, d.name AS name, d.metric AS metric, d.n_tokens AS n_tokens, d.description AS description,
       checkpoints
ORDER BY name, slice
