// Every node label of the catalog has a unique id (docs/design.md, "The graph"), and the
// migration history node has a unique version. Each constraint also gives the id lookups an index.
CREATE CONSTRAINT model_id IF NOT EXISTS FOR (n:Model) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT checkpoint_id IF NOT EXISTS FOR (n:Checkpoint) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT block_id IF NOT EXISTS FOR (n:Block) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT subspace_id IF NOT EXISTS FOR (n:Subspace) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT data_slice_id IF NOT EXISTS FOR (n:DataSlice) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT ingest_run_id IF NOT EXISTS FOR (n:IngestRun) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT schema_migration_version IF NOT EXISTS FOR (n:SchemaMigration) REQUIRE n.version IS UNIQUE;
