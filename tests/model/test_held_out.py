"""Held-out prompts are drawn at random, by the seed, from every part of a slice: a task file sorted
by class gives each channel the effect the same prompts give in another order, within the standard
errors the artifact stores (when the last rows were held out, the sorted file's effects were its
last class's alone)."""

import json
import random

import pytest

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest


def effects(checkpoint, rows, path, out):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    [artifact] = ingest(
        str(checkpoint), [], [f"mixed={path}"], out, IngestConfig(), progress=False, echo=lambda _: None
    )
    activity = read_artifact(artifact).tables["activity"]
    return {r.block: (r.ablation, r.ablation_se) for r in activity.itertuples()}


def test_a_slice_sorted_by_class_has_the_effects_of_the_same_prompts_shuffled(keyvalue_checkpoints, tmp_path):
    final = keyvalue_checkpoints[-1]
    task, trivial = (
        [json.loads(line) for line in (final.parent / f"{name}.jsonl").open()] for name in ("task", "trivial")
    )
    shuffled = task + trivial
    random.Random(0).shuffle(shuffled)
    by_class = effects(final, task + trivial, tmp_path / "sorted.jsonl", tmp_path / "a")
    mixed = effects(final, shuffled, tmp_path / "shuffled.jsonl", tmp_path / "b")
    assert by_class["L0H0"][0] > 1.0  # the previous-token head matters on the task half (about 5 nats there)
    for channel, (effect, error) in by_class.items():
        other, other_error = mixed[channel]
        assert 0 < error < 0.5 and 0 < other_error < 0.5, channel
        assert effect == pytest.approx(other, abs=4 * (error**2 + other_error**2) ** 0.5 + 0.01), channel
