// name: begin_staging
// description: Create the private checkpoint node a load writes under ($staging_id, status 'staging', no
//   Model): queries never see it, and the live version of $checkpoint_id stays as it was until publish.
//   $owner (host:pid) and the heartbeat tell a later load whether the writer is gone.
// returns: nothing
// params: $staging_id (string), $checkpoint_id (string), $owner (string)
CREATE (:Checkpoint {id: $staging_id, status: 'staging', target: $checkpoint_id, owner: $owner, heartbeat: datetime()})
