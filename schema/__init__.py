"""The catalog's Neo4j schema: ordered ``V<NNN>__<name>.cypher`` migrations and their runner."""
