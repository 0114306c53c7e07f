// name: lock_model
// description: Create the Model if new and take a write lock on it: the publish transactions of one
//   model's checkpoints run one at a time, so each sees what the others published (first statement of
//   the transaction, before anything is read).
// returns: nothing
// params: $model_id (string)
MERGE (m:Model {id: $model_id})
SET m._lock = true
REMOVE m._lock
