// name: faithfulness_curve
// description: How much of a slice's behaviour the circuit keeps as it grows: the channels of a checkpoint in order
//   of their exact ablation effect on the slice (largest first), each with the faithfulness of the circuit of every
//   channel up to it (the others ablated; 1 = the circuit alone does the work). The circuit of any $min_effect
//   is a prefix of this list. Effect_se: the effect's standard error over the prompts sampled. Baseline: what an
//   ablated channel's output became (null for a catalog loaded before it was recorded: a mean pooled over the
//   ingest's slices).
// returns: rank, channel, effect, effect_se, faithfulness, baseline
// params: $checkpoint (string), $slice (string)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice})
WHERE a.effect_rank IS NOT NULL
RETURN a.effect_rank AS rank, b.name AS channel, a.ablation AS effect, a.ablation_se AS effect_se,
       a.faithfulness AS faithfulness, a.ablation_baseline AS baseline
ORDER BY rank
