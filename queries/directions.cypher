// name: directions
// description: What each direction of a checkpoint's write subspaces does, channel by channel: the output
//   tokens it promotes and suppresses directly (through the unembedding; their text, else their ids), and,
//   where the ingest measured it on slice $slice (ingest --steer), what pushing it up (push > 0) and down by
//   that many standard deviations did there: the change of the slice's metric with its standard error, of
//   answer accuracy (task slices), the KL divergence from the clean prediction and the share of scored
//   positions whose most likely token changed. Unmeasured directions come once, with null push. The
//   largest change of the metric first. Filter: $channel (null: every writer).
// returns: channel, direction, push, loss_delta, loss_se, accuracy_delta, kl, flipped, promotes, suppresses
// params: $checkpoint (string), $slice (string), $channel (string or null)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[:HAS_SUBSPACE]->(s:Subspace {role: 'out'})
WHERE ($channel IS NULL OR b.name = $channel) AND s.rank > 0
UNWIND range(0, s.rank - 1) AS direction
OPTIONAL MATCH (s)-[r:STEERED_ON {direction: direction}]->(:DataSlice {name: $slice})
WITH b, s, direction, r, size(coalesce(s.promoted_tokens, [])) / s.rank AS per
WITH b, s, direction, r, range(direction * per, (direction + 1) * per - 1) AS mine
RETURN b.name AS channel, direction, r.push AS push, r.loss_delta AS loss_delta, r.loss_se AS loss_se,
       r.accuracy_delta AS accuracy_delta, r.kl AS kl, r.flipped AS flipped,
       [i IN mine | CASE WHEN trim(coalesce(s.promoted_text[i], '')) = '' THEN toString(s.promoted_tokens[i])
                         ELSE s.promoted_text[i] END] AS promotes,
       [i IN mine | CASE WHEN trim(coalesce(s.suppressed_text[i], '')) = '' THEN toString(s.suppressed_tokens[i])
                         ELSE s.suppressed_text[i] END] AS suppresses
ORDER BY r IS NULL, abs(r.loss_delta) DESC, b.order, direction, r.push DESC
