"""Schema migrations against the real server: idempotent, recorded, and checksum-guarded."""

import pytest

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.schema.migrations import (
    WHOLE_FILE_CHECKSUMS_0_1,
    available_migrations,
    migrate,
    migration_states,
    require_current_schema,
)


def schema_snapshot(driver, database):
    constraints = driver.execute_query(
        "SHOW CONSTRAINTS YIELD name, labelsOrTypes, properties RETURN collect([name, labelsOrTypes, properties]) AS c",
        database_=database,
    ).records[0]["c"]
    indexes = driver.execute_query(
        "SHOW INDEXES YIELD name, type, labelsOrTypes, properties "
        "WHERE type <> 'LOOKUP' RETURN collect([name, type, labelsOrTypes, properties]) AS i",
        database_=database,
    ).records[0]["i"]
    return sorted(map(tuple, map(str, constraints))), sorted(map(str, indexes))


def test_migrate_applies_everything_once_then_is_a_no_op(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    assert [s.status for s in migration_states(empty_catalog, db)] == ["pending"] * len(available_migrations())
    applied = migrate(empty_catalog, db)
    assert [m.version for m in applied] == [m.version for m in available_migrations()]
    first = schema_snapshot(empty_catalog, db)
    assert migrate(empty_catalog, db) == []
    assert schema_snapshot(empty_catalog, db) == first
    assert all(s.status == "applied" for s in migration_states(empty_catalog, db))
    require_current_schema(empty_catalog, db)


def test_schema_has_the_constraints_and_indexes_the_queries_need(empty_catalog, neo4j_settings):
    migrate(empty_catalog, neo4j_settings.database)
    rows = empty_catalog.execute_query(
        "SHOW INDEXES YIELD name, type, labelsOrTypes, properties, options", database_=neo4j_settings.database
    ).records
    by_name = {r["name"]: r for r in rows}
    unique_ids = {
        "model_id": "Model",
        "checkpoint_id": "Checkpoint",
        "block_id": "Block",
        "subspace_id": "Subspace",
        "data_slice_id": "DataSlice",
        "ingest_run_id": "IngestRun",
        "publish_lock_id": "PublishLock",
    }
    for constraint, label in unique_ids.items():
        assert by_name[constraint]["labelsOrTypes"] == [label]
        assert by_name[constraint]["properties"] == ["id"]
    assert by_name["checkpoint_model_step"]["properties"] == ["model_id", "step"]
    assert by_name["block_checkpoint_layer"]["properties"] == ["checkpoint_id", "layer"]
    assert by_name["subspace_block_role"]["properties"] == ["block_id", "role"]
    fingerprints = by_name["block_fingerprint_euclidean"]
    assert fingerprints["type"] == "VECTOR" and "block_fingerprint" not in by_name  # V007 replaced the cosine one
    assert fingerprints["options"]["indexConfig"]["vector.similarity_function"].lower() == "euclidean"
    # No catalog-wide index on relationship properties: queries reach relationships from one checkpoint.
    assert not [r["name"] for r in rows if r["type"] == "RANGE" and r["labelsOrTypes"][0] in ("FEEDS", "FLOWS_ON")]


def test_an_edited_applied_migration_is_refused(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    # What an edited file looks like from the database's side: the recorded checksum differs.
    empty_catalog.execute_query("MATCH (m:SchemaMigration {version: 2}) SET m.checksum = 'deadbeef'", database_=db)
    with pytest.raises(UserError, match=r"V002__lookup_indexes.cypher was applied with checksum deadbeef.*must not be"):
        migrate(empty_catalog, db)


def test_a_catalog_from_a_newer_version_is_refused(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    empty_catalog.execute_query("CREATE (:SchemaMigration {version: 999, name: 'future', checksum: 'x'})", database_=db)
    with pytest.raises(UserError, match=r"\[999\].*newer version"):
        migration_states(empty_catalog, db)


def test_a_catalog_from_an_older_schema_is_reported_and_upgraded_in_place(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    last = available_migrations()[-1]
    empty_catalog.execute_query("MATCH (m:SchemaMigration {version: $v}) DELETE m", v=last.version, database_=db)
    with pytest.raises(UserError, match=rf"V{last.version:03d}__{last.name}.*circuit-atlas schema migrate"):
        require_current_schema(empty_catalog, db)
    assert [m.version for m in migrate(empty_catalog, db)] == [last.version]
    require_current_schema(empty_catalog, db)


def test_the_label_migration_labels_blocks_of_an_older_catalog(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    [labels] = [m for m in available_migrations() if m.name == "block_kind_labels"]
    empty_catalog.execute_query("MATCH (m:SchemaMigration {version: $v}) DELETE m", v=labels.version, database_=db)
    empty_catalog.execute_query(
        "UNWIND $kinds AS kind CREATE (:Block {id: 'old/' + kind, kind: kind})", kinds=list(KIND_LABELS), database_=db
    )
    migrate(empty_catalog, db)
    rows = empty_catalog.execute_query(
        "MATCH (b:Block) RETURN b.kind AS kind, [l IN labels(b) WHERE l <> 'Block'] AS l", database_=db
    ).records
    assert {r["kind"]: r["l"] for r in rows} == {kind: [label] for kind, label in KIND_LABELS.items()}


def test_a_history_recorded_by_0_1_is_accepted_and_its_checksums_rewritten(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    empty_catalog.execute_query(
        "UNWIND $old AS o MATCH (m:SchemaMigration {version: o[0]}) SET m.checksum = o[1]",
        old=[[v, c] for v, c in WHOLE_FILE_CHECKSUMS_0_1.items()],
        database_=db,
    )
    require_current_schema(empty_catalog, db)  # 0.1's whole-file checksums name the same statements
    assert migrate(empty_catalog, db) == []
    recorded = empty_catalog.execute_query(
        "MATCH (m:SchemaMigration) RETURN m.version AS v, m.checksum AS c", database_=db
    ).records
    assert {r["v"]: r["c"] for r in recorded} == {m.version: m.checksum for m in available_migrations()}


def test_the_order_backfill_puts_blocks_of_an_older_catalog_in_channel_order(empty_catalog, neo4j_settings):
    db = neo4j_settings.database
    migrate(empty_catalog, db)
    [backfill] = [m for m in available_migrations() if m.name == "block_order"]
    empty_catalog.execute_query("MATCH (m:SchemaMigration {version: $v}) DELETE m", v=backfill.version, database_=db)
    blocks = [
        ("unembed", "unembed", 1, None),
        ("L0.mlp", "mlp", 0, None),
        ("L0H1", "attn_head", 0, 1),
        ("embed", "embed", -1, None),
        ("L0H0", "attn_head", 0, 0),
    ]
    empty_catalog.execute_query(
        "CREATE (c:Checkpoint {id: 'old@1'}) WITH c UNWIND $blocks AS b "
        "CREATE (c)-[:HAS_BLOCK]->(:Block {id: 'old@1/' + b[0], name: b[0], kind: b[1], layer: b[2], head: b[3]})",
        blocks=[list(b) for b in blocks],
        database_=db,
    )
    migrate(empty_catalog, db)
    rows = empty_catalog.execute_query("MATCH (b:Block) RETURN b.name AS name ORDER BY b.order", database_=db).records
    assert [r["name"] for r in rows] == ["embed", "L0H0", "L0H1", "L0.mlp", "unembed"]
