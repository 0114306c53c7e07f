// name: changed_between
// description: The channels whose lineage differs between complete checkpoints $checkpoint_a and
//   $checkpoint_b of one model (either order): at the later one the channel's lineage starts after the
//   earlier one, so the channel is no longer directly similar to what it was there (matching.py's rule).
// returns: channel, kind, lineage_at_earlier, lineage_at_later, similarity_to_start
// params: $checkpoint_a (string), $checkpoint_b (string)
MATCH (a:Checkpoint {id: $checkpoint_a, status: 'complete'})
MATCH (b:Checkpoint {id: $checkpoint_b, status: 'complete'})
WHERE a.model_id = b.model_id
WITH CASE WHEN a.step <= b.step THEN [a, b] ELSE [b, a] END AS ends
MATCH (earlier:Checkpoint {id: ends[0].id})-[:HAS_BLOCK]->(x:Block)
MATCH (later:Checkpoint {id: ends[1].id})-[:HAS_BLOCK]->(y:Block {name: x.name})
WHERE x.lineage_start <> y.lineage_start
RETURN y.name AS channel, y.kind AS kind, x.lineage_start AS lineage_at_earlier, y.lineage_start AS lineage_at_later,
       y.lineage_similarity AS similarity_to_start
ORDER BY y.order
