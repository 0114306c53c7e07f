// name: matches_between
// description: Every channel of checkpoint $to followed back through MATCHES to checkpoint $from, any
//   two complete checkpoints of one model (in either order): whether an unbroken chain of matches
//   joins them and its weakest subspace similarity, the similarity of the two fingerprints, and where
//   the channel first appears (the checkpoint its unbroken chain of matches to the later one starts at).
// returns: channel, kind, matched, weakest_similarity, fingerprint_similarity, first_appears, first_step
// params: $from (string), $to (string)
MATCH (a:Checkpoint {id: $from, status: 'complete'})
MATCH (b:Checkpoint {id: $to, status: 'complete'})
WHERE a.model_id = b.model_id
WITH CASE WHEN a.step <= b.step THEN [a, b] ELSE [b, a] END AS ends
WITH ends[0] AS earlier, ends[1] AS later
MATCH (later)-[:HAS_BLOCK]->(end:Block)
OPTIONAL MATCH (earlier)-[:HAS_BLOCK]->(start:Block {name: end.name})
OPTIONAL MATCH chain = (start)-[:MATCHES*0..]->(end)
OPTIONAL MATCH lineage = (first:Block)-[:MATCHES*0..]->(end)
WHERE NOT EXISTS { (:Block)-[:MATCHES]->(first) }
MATCH (origin:Checkpoint)-[:HAS_BLOCK]->(first)
RETURN end.name AS channel, end.kind AS kind, chain IS NOT NULL AS matched,
       reduce(weakest = null, m IN coalesce(relationships(chain), []) |
              CASE WHEN weakest IS NULL OR m.similarity < weakest THEN m.similarity ELSE weakest END)
         AS weakest_similarity,
       vector.similarity.euclidean(start.fingerprint, end.fingerprint) AS fingerprint_similarity,
       origin.id AS first_appears, origin.step AS first_step
ORDER BY end.order
