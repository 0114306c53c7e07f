// name: complete_checkpoint
// description: Mark a checkpoint and its IngestRun complete: from now on queries see it.
// returns: nothing
// params: $checkpoint_id, $run_id
MATCH (c:Checkpoint {id: $checkpoint_id}), (r:IngestRun {id: $run_id})
SET c.status = 'complete', r.status = 'complete'
