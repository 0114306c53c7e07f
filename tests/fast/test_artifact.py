"""The artifact's one schema: written and read through it, whole or refused."""

import json
import os
import socket
import subprocess

import pandas as pd
import pytest
import torch
from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from synthetic_artifacts import Checkpoint, rehash, write

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import (
    TABLES,
    columns,
    find_artifacts,
    frame,
    is_complete,
    partial_path,
    read_artifact,
    schema,
    write_artifact,
)

CHECKPOINT = Checkpoint("m", "1", 1, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION)


def test_round_trip_keeps_every_table_column_and_basis(tmp_path):
    path = write(CHECKPOINT, tmp_path)
    artifact = read_artifact(path)
    assert set(artifact.tables) == set(TABLES)
    for name, table in artifact.tables.items():
        assert list(table.columns) == columns(name), name
    blocks = artifact.tables["blocks"]
    assert blocks["name"].tolist() == list("ABCDE") and blocks["order"].tolist() == [0, 1, 2, 3, 4]
    assert blocks["head"].isna().tolist() == [False, False, False, True, False]
    assert list(blocks["fingerprint"].iloc[2]) == [0.9, 0.1, 0.0]
    assert artifact.tables["edges"][["writer", "reader", "role"]].values.tolist()[0] == ["A", "B", "k"]
    torch.testing.assert_close(artifact.bases()["A/q"], torch.eye(4)[:, :2])
    assert is_complete(path, "synthetic") and not is_complete(path, "another-config")
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_frame_with_other_columns_is_refused_on_write(tmp_path):
    artifact = read_artifact(write(CHECKPOINT, tmp_path / "a"))
    tables = {**artifact.tables, "edges": artifact.tables["edges"].drop(columns=["flow"])}
    with pytest.raises(ValueError, match="edges has columns"):
        write_artifact(tmp_path / "b", artifact.manifest, tables, artifact.bases())
    with pytest.raises(ValueError, match="schema has"):
        frame("matches", [{"block": "A"}])


def test_damage_is_detected(tmp_path):
    path = write(CHECKPOINT, tmp_path)
    (path / "edges.parquet").write_bytes(b"damaged")
    with pytest.raises(UserError, match="does not match its hash"):
        read_artifact(path)


def test_an_older_format_is_refused_with_the_fix(tmp_path):
    path = write(CHECKPOINT, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(UserError, match=r"artifact format 1.*Re-run the ingest"):
        read_artifact(path)
    assert not is_complete(path)


def test_a_table_that_does_not_fit_the_schema_is_refused_on_read(tmp_path):
    path = write(CHECKPOINT, tmp_path)
    pd.DataFrame({"block": ["A"]}).to_parquet(path / "matches.parquet")
    rehash(path, "matches.parquet")
    with pytest.raises(UserError, match="not those of artifact format"):
        read_artifact(path)


def test_a_write_removes_the_temporary_folders_of_writers_that_are_gone(tmp_path):
    dead = _a_dead_pid()
    abandoned = [
        tmp_path / f".m__1.partial-{socket.gethostname()}-{dead}",
        tmp_path / f".m__1.partial-{dead}",  # named as circuit-atlas 0.2 named them
        tmp_path / f".m__1.old-{dead}",
    ]
    alive = [
        tmp_path / f".m__1.partial-{socket.gethostname()}-{os.getpid()}",
        tmp_path / f".m__2.partial-otherhost-{dead}",
    ]
    for folder in abandoned + alive:
        (folder / "inner").mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
    path = write(CHECKPOINT, tmp_path)
    assert not [f for f in abandoned if f.exists()]
    assert all(f.exists() for f in alive if f.name != partial_path(path).name)
    assert find_artifacts(tmp_path) == [path]


def _a_dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_an_artifact_with_a_hidden_name_is_found(tmp_path):
    path = write(Checkpoint(".hidden", "1", 1, CHANNELS), tmp_path)
    assert path.name.startswith(".") and find_artifacts(tmp_path) == [path]


def _rewrite(path, table, frame_):
    """Replace one table of an artifact and update its hash, as a hand edit would."""
    frame_.to_parquet(path / f"{table}.parquet", index=False, schema=schema(table))
    rehash(path, f"{table}.parquet")


@pytest.mark.parametrize(
    "table,edit,message",
    [
        ("edges", lambda f: f.assign(writer=["A", "Z", "D", "C"]), "edges.writer names block 'Z'"),
        ("activity", lambda f: f.assign(slice="nope"), "activity names slice 'nope'"),
        ("blocks", lambda f: f.assign(name=["A", "A", "C", "D", "E"]), "blocks names 'A' twice"),
        ("edges", lambda f: f.assign(role=["k", "v", "in", "in"]), "edges names subspace 'E/in'"),
    ],
)
def test_rows_that_name_what_the_artifact_lacks_are_refused(tmp_path, table, edit, message):
    path = write(CHECKPOINT, tmp_path)
    _rewrite(path, table, edit(read_artifact(path).tables[table]))
    with pytest.raises(UserError, match=message):
        read_artifact(path)
