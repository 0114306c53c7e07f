// name: save_intervention
// description: Save one intervention measured by steer on complete checkpoint $checkpoint_id: an
//   (:Intervention) with $intervention's properties and the checkpoint's id, step and config hash,
//   -[:ON]-> the channel's write Subspace (its Block for an ablation), and -[:MEASURED_ON]-> each
//   DataSlice of $measured (slice, values) that the channel is active on. The same spec and seed saved
//   again replace the measurements. Returns how many slices were recorded.
// returns: measured
// params: $checkpoint_id (string), $intervention (map), $measured (list)
MATCH (c:Checkpoint {id: $checkpoint_id, status: 'complete'})-[:HAS_BLOCK]->(b:Block {name: $intervention.channel})
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace {role: 'out'})
MERGE (i:Intervention {id: $intervention.id})
SET i = $intervention, i.checkpoint_id = c.id, i.model_id = c.model_id, i.step = c.step,
    i.config_hash = c.config_hash
WITH i, b, s
CALL (i) {
  MATCH (i)-[old:ON|MEASURED_ON]->()
  DELETE old
}
FOREACH (target IN CASE WHEN i.action = 'ablate' OR s IS NULL THEN [b] ELSE [s] END | CREATE (i)-[:ON]->(target))
WITH i, b
UNWIND $measured AS m
MATCH (b)-[:ACTIVE_ON]->(d:DataSlice {name: m.slice})
CREATE (i)-[r:MEASURED_ON]->(d)
SET r = m.values
RETURN count(r) AS measured
