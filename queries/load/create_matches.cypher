// name: create_matches
// description: Create MATCHES from a Block of the complete checkpoint $previous_id to the same Block of
//   the checkpoint being loaded.
// returns: nothing
// params: $rows, $previous_id
UNWIND $rows AS row
MATCH (before:Block {id: row.before}), (after:Block {id: row.after})
MATCH (:Checkpoint {id: $previous_id, status: 'complete'})-[:HAS_BLOCK]->(before)
CREATE (before)-[m:MATCHES]->(after)
SET m = row.properties
