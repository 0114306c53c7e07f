// name: circuit_view
// description: The circuit of `circuit` drawn for Neo4j Browser at channel level (needs APOC): the
//   member Blocks and one virtual relationship per writer -> reader, carrying the read roles and the
//   summed effect on the slice of the edges `circuit` keeps (each edge's patched effect where measured, else
//   its attribution). Browser styles widths by relationship type only, so the type grades the
//   effect against the circuit's strongest pair: CARRIES_STRONG from 2/3 of it, CARRIES_MEDIUM
//   from 1/3, CARRIES_WEAK below (the stylesheet draws them 8, 4 and 1.5 px wide). Each member's write
//   Subspace comes too (the path to it), with what each direction promotes and suppresses directly
//   and, expanded in Browser, how its steering measured on each slice (STEERED_ON, ingest --steer).
// returns: blocks, carries, writes (nodes, relationships and paths, not a table)
// params: $checkpoint (string), $slice (string), $min_effect (float), $min_attribution (float >= 0)
MATCH (:Checkpoint {id: $checkpoint, status: 'complete'})-[:HAS_BLOCK]->(b:Block)-[a:ACTIVE_ON]->(:DataSlice {name: $slice})
WHERE a.ablation >= $min_effect
WITH collect(b) AS blocks
CALL (blocks) {
  UNWIND blocks AS writer
  MATCH (writer)-[:HAS_SUBSPACE]->(:Subspace)-[f:FLOWS_ON {slice: $slice}]->(read:Subspace)<-[:HAS_SUBSPACE]-(reader:Block)
  WITH writer, reader, read.role AS role, coalesce(f.patched, f.attribution) AS effect
  WHERE reader IN blocks AND effect >= $min_attribution
  WITH writer, reader, role, effect ORDER BY writer.name, reader.name, role
  WITH writer, reader, collect(role) AS roles, sum(effect) AS effect
  RETURN collect({writer: writer, reader: reader, roles: roles, effect: effect}) AS pairs
}
CALL (blocks) {
  UNWIND blocks AS member
  MATCH write = (member)-[:HAS_SUBSPACE]->(s:Subspace {role: 'out'})
  WHERE s.rank > 0
  RETURN collect(write) AS writes
}
WITH blocks, pairs, writes, reduce(top = 0.0, p IN pairs | CASE WHEN p.effect > top THEN p.effect ELSE top END) AS top
RETURN blocks,
       [p IN pairs | apoc.create.vRelationship(p.writer,
          CASE WHEN p.effect >= 2 * top / 3 THEN 'CARRIES_STRONG'
               WHEN p.effect >= top / 3 THEN 'CARRIES_MEDIUM' ELSE 'CARRIES_WEAK' END,
          {roles: p.roles, effect: p.effect, share: p.effect / top}, p.reader)] AS carries, writes
