"""The artifact's one schema: written and read through it, whole or refused."""

import json

import pandas as pd
import pytest
import torch
from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from synthetic_artifacts import Checkpoint, write

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import TABLES, columns, frame, is_complete, read_artifact, write_artifact

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
    manifest = json.loads((path / "manifest.json").read_text())
    from circuit_atlas.ingest.artifact import _sha256

    manifest["files"]["matches.parquet"] = _sha256(path / "matches.parquet")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="not those of artifact format"):
        read_artifact(path)
