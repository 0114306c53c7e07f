// name: claim_staging
// description: Take over the abandoned staging checkpoint $staging_id if its owner is still $owner (under
//   a write lock on it, so of two loads that find it abandoned, one claims it); returns it when claimed.
// returns: id
// params: $staging_id (string), $owner (string), $new_owner (string)
MATCH (s:Checkpoint {id: $staging_id, status: 'staging'})
SET s._lock = true
REMOVE s._lock
WITH s WHERE s.owner = $owner
SET s.owner = $new_owner, s.heartbeat = datetime()
RETURN s.id AS id
