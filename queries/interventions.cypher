// name: interventions
// description: Saved interventions (circuit-atlas steer --save), one row per intervention and slice it
//   was measured on, in step order: its checkpoint, channel and spec, the change of the slice's metric
//   with its standard error, the answer accuracy change (task slices), the KL divergence from the clean
//   output, the share of scored positions whose top token changed (null when saved before it was
//   measured), and whether it is still attached (false once the checkpoint was loaded again: it measured
//   the version that was replaced). Filters: $model, $channel, $slice (null: all).
// returns: checkpoint, step, channel, spec, slice, loss_delta, loss_se, accuracy_delta, kl, flipped, attached
// params: $model (string or null), $channel (string or null), $slice (string or null)
MATCH (i:Intervention)-[r:MEASURED_ON]->(d:DataSlice)
WHERE ($model IS NULL OR i.model_id = $model) AND ($channel IS NULL OR i.channel = $channel)
  AND ($slice IS NULL OR d.name = $slice)
RETURN i.checkpoint_id AS checkpoint, i.step AS step, i.channel AS channel, i.spec AS spec, d.name AS slice,
       r.loss_delta AS loss_delta, r.loss_se AS loss_se, r.accuracy_delta AS accuracy_delta, r.kl AS kl,
       r.flipped AS flipped, EXISTS { (i)-[:ON]->() } AS attached
ORDER BY i.model_id, step, channel, spec, slice
