// name: slice_contrast
// description: Channels of a checkpoint active on slice $slice_a (ablation effect >= $min_effect) and not
//   on slice $slice_b (effect below it there), largest difference first.
// returns: channel, kind, effect_a, effect_b
// params: $checkpoint (string), $slice_a (string), $slice_b (string), $min_effect (float)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice_a})
WHERE a.ablation >= $min_effect
MATCH (b)-[o:ACTIVE_ON]->(:DataSlice {name: $slice_b})
WHERE o.ablation < $min_effect
RETURN b.name AS channel, b.kind AS kind, a.ablation AS effect_a, o.ablation AS effect_b
ORDER BY effect_a - effect_b DESC, b.order
