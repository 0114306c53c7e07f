"""An interrupted multi-checkpoint ingest resumes: complete artifacts are skipped unless forced,
and what follows them is computed as in an uninterrupted run."""

import numpy as np
import pandas as pd
import pytest
from builders import random_gpt2

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest

CONFIG = IngestConfig(seq_len=8, n_seq=12, energy=0.9)


def run(checkpoints, out, **options):
    said = []
    paths = ingest(
        str(checkpoints[-1]),
        [str(c) for c in checkpoints],
        ["random"],
        out,
        CONFIG,
        progress=False,
        echo=said.append,
        **options,
    )
    return paths, [line for line in said if "skipped" in line]


def test_a_second_run_skips_complete_checkpoints_and_force_recomputes(tmp_path):
    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0), random_gpt2(tmp_path / "step-2", seed=0)]
    first, skipped = run(checkpoints, tmp_path / "out")
    assert skipped == []
    written = {p: (p / "manifest.json").stat().st_mtime_ns for p in first}
    again, skipped = run(checkpoints, tmp_path / "out")
    assert again == first and len(skipped) == 2
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in again} == written
    forced, skipped = run(checkpoints, tmp_path / "out", force=True)
    assert forced == first and skipped == []
    assert all((p / "manifest.json").stat().st_mtime_ns > written[p] for p in forced)


def test_a_run_that_died_after_the_first_checkpoint_resumes_with_the_same_matches(tmp_path):
    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0), random_gpt2(tmp_path / "step-2", seed=0)]
    complete, _ = run(checkpoints, tmp_path / "whole")
    expected = read_artifact(complete[1]).tables["matches"]
    assert len(expected) > 0  # the same weights at both steps match themselves

    class Died(Exception):
        """The run killed once its first artifact is written."""

    def die(_path) -> None:
        raise Died

    with pytest.raises(Died):
        run(checkpoints, tmp_path / "resumed", on_artifact=die)
    resumed, skipped = run(checkpoints, tmp_path / "resumed")
    assert len(skipped) == 1 and "step-1" in skipped[0]
    pd.testing.assert_frame_equal(read_artifact(resumed[1]).tables["matches"], expected)


def test_a_checkpoint_ingested_in_another_series_is_recomputed(tmp_path):
    """Its similarities to the series' ends and its lineages belong to a series: the first checkpoint
    alone, then in a series of two, is computed again (and then skipped in that series)."""
    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0), random_gpt2(tmp_path / "step-2", seed=1)]
    [alone], _ = run(checkpoints[:1], tmp_path / "out")
    assert read_artifact(alone).manifest["series"] == ["step-1"]
    both, skipped = run(checkpoints, tmp_path / "out")
    assert skipped == [] and both[0] == alone and read_artifact(alone).manifest["series"] == ["step-1", "step-2"]
    assert len(run(checkpoints, tmp_path / "out")[1]) == 2


def test_other_data_is_not_taken_for_a_complete_artifact(tmp_path):
    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0)]
    [random_path], _ = run(checkpoints, tmp_path / "out")
    said = []
    [repeated_path] = ingest(
        str(checkpoints[0]), [], ["repeated"], tmp_path / "out", CONFIG, progress=False, echo=said.append
    )
    assert repeated_path != random_path and not any("skipped" in line for line in said)


def test_a_token_file_rewritten_in_place_is_other_data(tmp_path):
    """Resuming goes by the data's content, not the arguments' text: the same ``--data t=tok.npy``
    over other tokens computes a new artifact."""
    checkpoint = random_gpt2(tmp_path / "step-1", seed=0)
    tokens = tmp_path / "tok.npy"
    generator = np.random.default_rng(0)
    np.save(tokens, generator.integers(0, 32, size=(12, 8)))
    arguments = [f"t={tokens}"]
    said = []

    def ingest_tokens():
        [path] = ingest(str(checkpoint), [], arguments, tmp_path / "out", CONFIG, progress=False, echo=said.append)
        return path

    first = ingest_tokens()
    assert ingest_tokens() == first and "skipped" in said[-1]
    np.save(tokens, generator.integers(0, 32, size=(12, 8)))
    second = ingest_tokens()
    assert second != first and not any("skipped" in line for line in said[-3:])


def test_a_label_names_the_one_checkpoint(tmp_path):
    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0), random_gpt2(tmp_path / "step-2", seed=0)]
    [path] = ingest(str(checkpoints[0]), [], ["random"], tmp_path / "out", CONFIG, progress=False, label="trained")
    assert read_artifact(path).manifest["checkpoint"]["label"] == "trained" and "__trained__" in path.name
    with pytest.raises(UserError, match="--label names one checkpoint, and this ingest has 2"):
        run(checkpoints, tmp_path / "out", label="trained")
    with pytest.raises(UserError, match="without '@'"):
        run(checkpoints[:1], tmp_path / "out", label="a@b")


def test_an_ingest_into_a_url_uploads_each_artifact_and_a_rerun_elsewhere_resumes_from_it(tmp_path, monkeypatch):
    """--out as an fsspec URL (here fsspec's in-memory store): each artifact is uploaded when whole; a
    rerun on a machine whose mirror is empty (another cache) finds both complete at the URL."""
    import secrets

    import fsspec

    from circuit_atlas.api import ingest_model

    checkpoints = [random_gpt2(tmp_path / "step-1", seed=0), random_gpt2(tmp_path / "step-2", seed=1)]
    url = f"memory://run-{secrets.token_hex(4)}/artifacts"

    def run_into(cache: str) -> list[str]:
        monkeypatch.setenv("CIRCUIT_ATLAS_CACHE", str(tmp_path / cache))
        said: list[str] = []
        options = {"checkpoints": [str(c) for c in checkpoints], "device": "cpu", "progress": False}
        ingest_model(str(checkpoints[-1]), ["random"], url, CONFIG, echo=said.append, **options)
        return said

    said = run_into("first")
    assert sum("uploaded to memory://" in line for line in said) == 2
    fs, root = fsspec.core.url_to_fs(url)
    assert len(fs.glob(f"{root}/*/manifest.json")) == 2
    again = run_into("second")
    assert sum("skipped" in line for line in again) == 2
    assert not any("uploaded" in line for line in again)
