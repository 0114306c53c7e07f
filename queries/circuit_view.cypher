// name: circuit_view
// description: The circuit of `circuit` drawn for Neo4j Browser at channel level (needs APOC): the
//   member Blocks and one virtual relationship per writer -> reader, carrying the read roles and the
//   summed slice attribution. Browser styles widths by relationship type only, so the type grades the
//   attribution against the circuit's strongest pair: CARRIES_STRONG from 2/3 of it, CARRIES_MEDIUM
//   from 1/3, CARRIES_WEAK below (the stylesheet draws them 8, 4 and 1.5 px wide).
// returns: blocks, carries (nodes and virtual relationships, not a table)
// params: $checkpoint (string), $slice (string), $min_effect (float), $min_attribution (float >= 0)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice})
WHERE a.ablation >= $min_effect
WITH collect(b) AS blocks
CALL (blocks) {
  UNWIND blocks AS writer
  MATCH (writer)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(read:Subspace)<-[:HAS_SUBSPACE]-(reader:Block)
  WHERE reader IN blocks AND f.attribution >= $min_attribution
  WITH writer, reader, read.role AS role, f.attribution AS attribution ORDER BY writer.name, reader.name, role
  WITH writer, reader, collect(role) AS roles, sum(attribution) AS attribution
  RETURN collect({writer: writer, reader: reader, roles: roles, attribution: attribution}) AS pairs
}
WITH blocks, pairs, reduce(top = 0.0, p IN pairs | CASE WHEN p.attribution > top THEN p.attribution ELSE top END) AS top
RETURN blocks,
       [p IN pairs | apoc.create.vRelationship(p.writer,
          CASE WHEN p.attribution >= 2 * top / 3 THEN 'CARRIES_STRONG'
               WHEN p.attribution >= top / 3 THEN 'CARRIES_MEDIUM' ELSE 'CARRIES_WEAK' END,
          {roles: p.roles, attribution: p.attribution, share: p.attribution / top}, p.reader)] AS carries
