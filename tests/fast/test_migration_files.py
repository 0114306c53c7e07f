"""The shipped migrations are well-formed: numbered 1..n, idempotent statements, stable checksums."""

import re

from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.schema.migrations import WHOLE_FILE_CHECKSUMS_0_1, available_migrations, checksum, split_statements


def test_versions_are_contiguous_and_files_are_found_in_the_installed_package():
    migrations = available_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(migrations) >= 3


def is_idempotent_ddl(statement: str) -> bool:
    upper = statement.upper()
    return (upper.startswith("CREATE ") and "IF NOT EXISTS" in upper) or (
        upper.startswith("DROP ") and upper.endswith(" IF EXISTS")
    )


def is_label_update(statement: str) -> bool:
    """MATCH ... SET n:Label and nothing else: running it twice changes nothing more."""
    return re.fullmatch(r"MATCH \(b:Block[^)]*\)( WHERE [^;]+?)? SET b:[A-Za-z]+", statement) is not None


def is_null_backfill(statement: str) -> bool:
    """MATCH ... WHERE x.p IS NULL ... SET x.p = ...: it only fills what is missing, so running it twice
    changes nothing more."""
    match = re.match(r"MATCH .*?WHERE (\w+)\.(\w+) IS NULL", statement, re.S)
    return match is not None and re.search(rf"SET {match.group(1)}\.{match.group(2)} = ", statement) is not None


def is_singleton_merge(statement: str) -> bool:
    """MERGE of one node by a constant id: running it twice finds the node the first run made."""
    return re.fullmatch(r"MERGE \(\w+:\w+ \{id: '[\w-]+'\}\)", statement) is not None


def kind_of(statement: str) -> str:
    if is_idempotent_ddl(statement):
        return "ddl"
    if is_label_update(statement) or is_null_backfill(statement) or is_singleton_merge(statement):
        return "data"
    return statement


def test_every_migration_is_idempotent_ddl_or_idempotent_data_updates_never_both():
    for migration in available_migrations():
        assert migration.statements, migration.filename
        kinds = {kind_of(s) for s in migration.statements}
        assert kinds in ({"ddl"}, {"data"}), (migration.filename, kinds)


def test_the_label_migration_covers_every_block_kind():
    [migration] = [m for m in available_migrations() if m.name == "block_kind_labels"]
    text = " ".join(migration.statements)
    for kind, label in KIND_LABELS.items():
        assert f"'{kind}'" in text and f"SET b:{label}" in text, kind


def test_every_node_label_of_the_design_has_a_unique_id_constraint():
    ddl = " ".join(s for m in available_migrations() for s in m.statements)
    for label in ["Model", "Checkpoint", "Block", "Subspace", "DataSlice", "IngestRun"]:
        assert f"(n:{label}) REQUIRE n.id IS UNIQUE" in ddl, label


def test_split_statements_drops_comments_and_splits_at_line_final_semicolons():
    text = "// header; with a semicolon\nCREATE A;\nCREATE B\n  CONTINUED;\n\n// tail\n"
    assert split_statements(text) == ("CREATE A", "CREATE B\n  CONTINUED")


def test_checksum_covers_statements_not_comments_or_line_endings():
    assert checksum("// one\nCREATE A;\r\nCREATE B;") == checksum("// two\nCREATE A;\nCREATE B;\n")
    assert checksum("CREATE A;") != checksum("CREATE B;")


def test_the_0_1_whole_file_checksums_belong_to_versions_that_exist():
    assert set(WHOLE_FILE_CHECKSUMS_0_1) <= {m.version for m in available_migrations()}
