// name: timeline
// description: Channel $channel of model $model across its complete checkpoints, one row per checkpoint
//   (in step order) and slice: its exact ablation effect there with its standard error, whether it is
//   in the slice's circuit by faithfulness and that circuit's faithfulness, its lineage (the checkpoint
//   it starts at and the direct similarity to it), its subspaces' mean direct similarity to the first
//   and last checkpoints of their series, and its ranks under the series' rank rule.
// returns: checkpoint, step, slice, effect, effect_se, in_circuit, circuit_faithfulness, lineage_start, lineage_similarity, similarity_to_first, similarity_to_last, ranks, rank_rule
// params: $model (string), $channel (string)
MATCH (:Model {id: $model})-[:HAS_CHECKPOINT]->(c:Checkpoint {status: 'complete'})-[:HAS_BLOCK]->(b:Block {name: $channel})
CALL (b) {
  MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
  WITH s ORDER BY s.role
  RETURN collect(s.role + '=' + toString(s.rank)) AS ranks, avg(s.similarity_to_first) AS similarity_to_first,
         avg(s.similarity_to_last) AS similarity_to_last
}
MATCH (b)-[a:ACTIVE_ON]->(d:DataSlice)
RETURN c.id AS checkpoint, c.step AS step, d.name AS slice, a.ablation AS effect, a.ablation_se AS effect_se,
       a.in_circuit AS in_circuit, a.circuit_faithfulness AS circuit_faithfulness, b.lineage_start AS lineage_start,
       b.lineage_similarity AS lineage_similarity, similarity_to_first, similarity_to_last, ranks, c.rank_rule AS rank_rule
ORDER BY step, slice
