// name: publish_checkpoint
// description: Upsert the Model's properties, the Checkpoint (all its properties replaced, status
//   'complete') and the IngestRun that produced it.
// returns: nothing
// params: $model (map), $checkpoint (map), $run (map)
MATCH (m:Model {id: $model.id})
SET m += $model
MERGE (c:Checkpoint {id: $checkpoint.id})
SET c = $checkpoint, c.status = 'complete'
MERGE (m)-[:HAS_CHECKPOINT]->(c)
MERGE (r:IngestRun {id: $run.id})
SET r = $run, r.status = 'complete'
MERGE (r)-[:PRODUCED]->(c)
