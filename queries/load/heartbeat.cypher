// name: heartbeat
// description: Mark a staging checkpoint as still being written.
// returns: nothing
// params: $staging_id (string)
MATCH (s:Checkpoint {id: $staging_id, status: 'staging'})
SET s.heartbeat = datetime()
