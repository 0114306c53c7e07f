// name: subspace_since
// description: When each subspace of channel $channel of model $model became what it is at the model's
//   last ingested checkpoint: the first complete checkpoint from which its direct similarity to that
//   last one stays at or above $threshold (null where it never does), with the similarity there.
// returns: role, since, since_step, similarity
// params: $model (string), $channel (string), $threshold (float in [0, 1], default 0.8)
MATCH (m:Model {id: $model})-[:HAS_CHECKPOINT]->(c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(:Block {name: $channel})-[:HAS_SUBSPACE]->(s:Subspace)
WITH s.role AS role, c, s ORDER BY c.step
WITH role, collect({checkpoint: c.id, step: c.step, similarity: s.similarity_to_last}) AS series
WITH role, series,
     [i IN range(0, size(series) - 1) WHERE all(later IN series[i..] WHERE later.similarity >= $threshold)] AS stable
WITH role, CASE WHEN size(stable) = 0 THEN null ELSE series[stable[0]] END AS first
RETURN role, first.checkpoint AS since, first.step AS since_step, first.similarity AS similarity
ORDER BY role
