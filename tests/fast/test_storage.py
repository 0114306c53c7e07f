"""Artifacts on shared storage (ingest/storage.py), on fsspec's in-memory file system: an upload is
visible only once its manifest is there, and a download mirrors the artifacts file for file."""

import secrets

import fsspec
import pytest
from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from synthetic_artifacts import Checkpoint, write

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import MANIFEST, read_artifact, read_manifest
from circuit_atlas.ingest.storage import download, mirror, upload


@pytest.fixture
def url(monkeypatch, tmp_path) -> str:
    """A fresh in-memory bucket, and a cache of this test's own for its mirror."""
    monkeypatch.setenv("CIRCUIT_ATLAS_CACHE", str(tmp_path / "cache"))
    return f"memory://bucket-{secrets.token_hex(4)}/run"


def test_an_upload_cut_off_before_its_manifest_is_invisible_and_a_whole_one_mirrors_file_for_file(url, tmp_path):
    artifacts = [
        write(Checkpoint("m", str(step), step, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION), tmp_path / "local")
        for step in (1, 2)
    ]
    fs, root = fsspec.core.url_to_fs(url)
    first = artifacts[0]
    for path in first.iterdir():  # every file but the manifest: an upload killed at its end
        if path.name != MANIFEST:
            fs.put_file(str(path), f"{root}/{first.name}/{path.name}")
    with pytest.raises(UserError, match="No artifact under"):
        download(url)
    for artifact in artifacts:
        assert upload(artifact, url) == f"{url}/{artifact.name}"
    assert upload(first, url) is None  # there already
    local = download(url)
    assert local == mirror(url)
    for artifact in artifacts:
        copy = local / artifact.name
        assert read_manifest(copy)["files"] == read_manifest(artifact)["files"]
        assert read_artifact(copy).tables["edges"].equals(read_artifact(artifact).tables["edges"])
    stamp = (local / first.name / MANIFEST).stat().st_mtime_ns
    assert download(f"{url}/{first.name}") != local  # one artifact's URL: its own mirror
    download(url)
    assert (local / first.name / MANIFEST).stat().st_mtime_ns == stamp  # mirrored already: kept


def test_a_url_without_artifacts_says_so():
    with pytest.raises(UserError, match="No artifact under memory://nothing-here"):
        download("memory://nothing-here")
