// name: lock_catalog
// description: Take the catalog's publish lock (a write lock on the one PublishLock node) and create the
//   Model if new: publish transactions run one at a time, so each sees what every other one published
//   (the MATCHES of a model's neighbours, the ANALOGOUS of other models). First statement of the
//   transaction, before anything is read.
// returns: nothing
// params: $model_id (string)
MERGE (lock:PublishLock {id: 'catalog'})
SET lock.held = true
REMOVE lock.held
MERGE (:Model {id: $model_id})
