// name: drop_checkpoint_node
// description: Delete a staging checkpoint node (its blocks already moved or deleted).
// returns: nothing
// params: $staging_id (string)
MATCH (s:Checkpoint {id: $staging_id, status: 'staging'})
DETACH DELETE s
