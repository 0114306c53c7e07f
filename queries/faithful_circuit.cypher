// name: faithful_circuit
// description: The circuit of a checkpoint on a data slice by faithfulness: the smallest set of channels the
//   ingest found that keeps at least its target share of the slice's behaviour with every other channel ablated
//   (--circuit-faithfulness, 0.9 by default). The search adds channels in order of exact ablation effect until
//   the target is reached, then drops each member, smallest effect first, when the rest still reach it, until
//   none can be; every step is an exact ablation on the slice's held-out sample, so a channel that does little
//   alone but is needed stays in, and dropping any member falls short of the target. One row: the members in channel order with their effects (nats), the size, the faithfulness
//   reached, the target, and why the circuit is empty (null when it is not); no row for an unknown checkpoint or
//   slice.
// returns: channels, effects, size, faithfulness, target, reason
// params: $checkpoint (string), $slice (string)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice})
WITH b, a ORDER BY b.order
WITH collect(CASE WHEN a.in_circuit THEN b.name END) AS channels,
     collect(CASE WHEN a.in_circuit THEN a.ablation END) AS effects,
     max(a.circuit_faithfulness) AS faithfulness, max(a.circuit_target) AS target,
     max(a.circuit_reason) AS reason, count(a) AS found
WHERE found > 0
RETURN channels, effects, size(channels) AS size, faithfulness, target,
       CASE WHEN target IS NULL THEN 'not searched: the checkpoint was ingested before circuits by faithfulness'
            ELSE reason END AS reason
