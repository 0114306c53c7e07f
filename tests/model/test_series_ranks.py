"""Ranks that compare across a series: several checkpoints are compressed at the rank fraction searched
on the last one (``--series-ranks last``, the default), each with its own search recorded beside;
``each`` searches every checkpoint for itself. A rerun resumes only where the series' fraction is
the same."""

from dataclasses import replace

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest

CONFIG = IngestConfig(n_seq=64, examples=0)
STEPS = ("step-01000", "step-02000", "step-03000")


def manifests(reference_checkpoints, out, config, echo=lambda _: None) -> list[dict]:
    steps = [c for c in reference_checkpoints if c.name in STEPS]
    paths = ingest(
        str(steps[-1]), [str(c) for c in steps], ["repeated", "random"], out, config, progress=False, echo=echo
    )
    return [read_artifact(p).manifest for p in paths]


def test_a_series_is_compressed_at_the_fraction_searched_on_its_last_checkpoint(reference_checkpoints, tmp_path):
    series = manifests(reference_checkpoints, tmp_path / "last", CONFIG)
    last = series[-1]["ranks"]["searched"]["fraction"]
    assert [m["fidelity"]["fraction"] for m in series] == [last] * len(STEPS)
    assert {m["ranks"]["rule"] for m in series} == {"searched on step-03000, the last checkpoint of the series"}
    each = manifests(reference_checkpoints, tmp_path / "each", replace(CONFIG, series_ranks="each"))
    assert [m["fidelity"]["fraction"] for m in each] == [m["ranks"]["searched"]["fraction"] for m in series]
    assert all(m["ranks"] == {"rule": "searched on this checkpoint", "searched": None} for m in each)
    # Step 1000 has no behaviour to compress against (its own search keeps every direction, 1.0); the
    # series compresses it like the others, and its recovery there is null with the reason.
    assert series[0]["ranks"]["searched"]["fraction"] == 1.0 != last
    assert series[0]["fidelity"]["loss_recovered"] is None and series[0]["fidelity"]["reason"]
    said = []
    assert manifests(reference_checkpoints, tmp_path / "last", CONFIG, said.append) == series
    assert sum("already complete" in line for line in said) == len(STEPS), said
