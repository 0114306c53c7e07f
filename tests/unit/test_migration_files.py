"""The shipped migrations are well-formed: numbered 1..n, idempotent DDL, stable checksums."""

from circuit_atlas.schema.migrations import available_migrations, checksum, split_statements


def test_versions_are_contiguous_and_files_are_found_in_the_installed_package():
    migrations = available_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(migrations) >= 3


def test_every_statement_is_idempotent_ddl():
    for migration in available_migrations():
        assert migration.statements, migration.filename
        for statement in migration.statements:
            assert statement.upper().startswith("CREATE "), statement
            assert "IF NOT EXISTS" in statement.upper(), statement


def test_every_node_label_of_the_design_has_a_unique_id_constraint():
    ddl = " ".join(s for m in available_migrations() for s in m.statements)
    for label in ["Model", "Checkpoint", "Block", "Subspace", "DataSlice", "IngestRun"]:
        assert f"(n:{label}) REQUIRE n.id IS UNIQUE" in ddl, label


def test_split_statements_drops_comments_and_splits_at_line_final_semicolons():
    text = "// header; with a semicolon\nCREATE A;\nCREATE B\n  CONTINUED;\n\n// tail\n"
    assert split_statements(text) == ("CREATE A", "CREATE B\n  CONTINUED")


def test_checksum_ignores_line_ending_style_only():
    assert checksum("a\r\nb") == checksum("a\nb")
    assert checksum("a\nb") != checksum("a\nc")
