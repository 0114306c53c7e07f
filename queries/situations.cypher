// name: situations
// description: The situations an ingest discovered in a checkpoint's data (slices with discovered: true), largest
//   first, each with its description and its circuit: the channels whose mean ablation raises its loss by at least
//   $min_effect, in order of effect, and that circuit's faithfulness (null when it is empty).
// returns: situation, description, tokens, circuit, faithfulness
// params: $checkpoint (string), $min_effect (float)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(d:DataSlice {discovered: true})
WITH d, b, a
ORDER BY a.effect_rank
WITH d, collect(CASE WHEN a.ablation >= $min_effect THEN {name: b.name, faithfulness: a.faithfulness} END) AS kept
RETURN d.name AS situation, d.description AS description, d.n_tokens AS tokens, [c IN kept | c.name] AS circuit,
       last(kept).faithfulness AS faithfulness
ORDER BY tokens DESC, situation
