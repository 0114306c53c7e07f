// name: link_matches
// description: Create the MATCHES of complete checkpoint $checkpoint_id with its complete neighbours, in
//   both directions: from its previous checkpoint to it, and from it to every complete checkpoint whose
//   artifact named it as previous. A later checkpoint's Blocks keep their match to the previous one
//   (match_similarity, match_fingerprint_similarity), so the link can be made whichever loads last.
// returns: nothing
// params: $checkpoint_id (string)
MATCH (c:Checkpoint {id: $checkpoint_id, status: 'complete'})
MATCH (later:Checkpoint {status: 'complete'})
WHERE (later = c AND c.previous_id IS NOT NULL) OR later.previous_id = c.id
MATCH (earlier:Checkpoint {id: later.previous_id, status: 'complete'})
MATCH (later)-[:HAS_BLOCK]->(after:Block)
WHERE after.match_similarity IS NOT NULL
MATCH (earlier)-[:HAS_BLOCK]->(before:Block {name: after.name})
MERGE (before)-[m:MATCHES]->(after)
SET m.similarity = after.match_similarity, m.fingerprint_similarity = after.match_fingerprint_similarity,
    m.method = 'subspace'
