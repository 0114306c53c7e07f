// name: begin_checkpoint
// description: Upsert the Model, the Checkpoint (status 'loading', so no query sees it) and the IngestRun
//   that produced it.
// returns: nothing
// params: $model, $checkpoint, $run
MERGE (m:Model {id: $model.id})
SET m += $model
MERGE (c:Checkpoint {id: $checkpoint.id})
SET c += $checkpoint, c.status = 'loading'
MERGE (m)-[:HAS_CHECKPOINT]->(c)
MERGE (r:IngestRun {id: $run.id})
SET r += $run, r.status = 'loading'
MERGE (r)-[:PRODUCED]->(c)
