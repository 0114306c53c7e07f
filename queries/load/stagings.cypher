// name: stagings
// description: The other staging checkpoints of $checkpoint_id: their owner (host:pid) and whether their
//   heartbeat is older than $stale_seconds.
// returns: id, owner, expired
// params: $checkpoint_id (string), $staging_id (string), $stale_seconds (integer >= 1)
MATCH (s:Checkpoint {target: $checkpoint_id, status: 'staging'})
WHERE s.id <> $staging_id
RETURN s.id AS id, s.owner AS owner, s.heartbeat < datetime() - duration({seconds: $stale_seconds}) AS expired
