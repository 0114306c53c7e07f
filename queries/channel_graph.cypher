// name: channel_graph
// description: A checkpoint's channel graph drawn for Neo4j Browser (needs APOC): its Blocks and one
//   virtual relationship per writer -> reader with a FEEDS edge of weight >= $min_weight, carrying
//   the read roles and the largest weight. As in `circuit_view`, the type grades that weight against
//   the strongest pair shown: CARRIES_STRONG from 2/3 of it, CARRIES_MEDIUM from 1/3, CARRIES_WEAK below.
// returns: blocks, carries (nodes and virtual relationships, not a table)
// params: $checkpoint (string), $min_weight (float in [0, 1])
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)
WITH collect(b) AS blocks
CALL (blocks) {
  UNWIND blocks AS writer
  MATCH (writer)-[:HAS_SUBSPACE]->(:Subspace)-[f:FEEDS]->(read:Subspace)<-[:HAS_SUBSPACE]-(reader:Block)
  WHERE f.weight >= $min_weight
  WITH writer, reader, read.role AS role, f.weight AS weight ORDER BY writer.name, reader.name, role
  WITH writer, reader, collect(role) AS roles, max(weight) AS weight
  RETURN collect({writer: writer, reader: reader, roles: roles, weight: weight}) AS pairs
}
WITH blocks, pairs, reduce(top = 0.0, p IN pairs | CASE WHEN p.weight > top THEN p.weight ELSE top END) AS top
RETURN blocks,
       [p IN pairs | apoc.create.vRelationship(p.writer,
          CASE WHEN p.weight >= 2 * top / 3 THEN 'CARRIES_STRONG'
               WHEN p.weight >= top / 3 THEN 'CARRIES_MEDIUM' ELSE 'CARRIES_WEAK' END,
          {roles: p.roles, weight: p.weight, share: p.weight / top}, p.reader)] AS carries
