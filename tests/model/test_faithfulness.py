"""Faithfulness on the reference model: the curve's points are what hooks written in the test give,
the induction circuit alone keeps the behaviour on repeated sequences, random sets of as many
channels do not, and an ingest stores the whole curve."""

import random

import pytest
from builders import plain_faithfulness

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import DataSlice, load_slice, synthetic_tokens
from circuit_atlas.ingest.faithfulness import curve_losses, effect_order, faithfulness, kept_variant
from circuit_atlas.ingest.fidelity import ablation_effects, ablation_losses, variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.slice_scorer import effect_sample
from circuit_atlas.ingest.statistics import accumulate_moments

# At 0.2 nats on repeated sequences the circuit is the embeddings, the previous-token head, both
# induction heads and both MLPs (7 of 8 channels: the other layer-0 head moves them by about 0.11).
MIN_EFFECT = 0.2


@pytest.fixture(scope="module")
def repeated(reference_checkpoints):
    """Interventions of the final checkpoint, a held-out sample of repeated sequences, and the
    channels' exact ablation effects on it."""
    model = load_model(str(reference_checkpoints[-1]))
    d_vocab, length = model.spec.d_vocab, model.spec.n_ctx

    def data(n: int, seed: int) -> DataSlice:
        return DataSlice.of_tokens("repeated", "", synthetic_tokens("repeated", d_vocab, n, length, seed))

    moments = accumulate_moments(model, [data(128, 0)], progress=False)
    sample = data(64, 1)
    baselines = {"repeated": Baseline.measure(model, sample, "position")}
    interventions = Interventions(model, Compression(decompose(moments, model.weights), 1.0, None, 1e-3), baselines)
    clean, ablated = ablation_losses(interventions, sample, 4096, progress=False)
    return interventions, sample, ablation_effects([c.name for c in interventions.layout.channels], clean, ablated)


def test_the_induction_circuit_keeps_the_behaviour_and_random_circuits_do_not(repeated):
    interventions, sample, effects = repeated
    channels = interventions.layout.channels
    order = effect_order(channels, effects)
    size = sum(effects[c.name] >= MIN_EFFECT for c in channels)
    curve = faithfulness(curve_losses(interventions, order, [sample], 4096, progress=False).mean(1))
    assert 0 < size < len(channels)
    for k in (1, size - 1, size):  # points of the curve, against hooks written in the test
        expected = plain_faithfulness(interventions.model, sample.tokens, {c.name for c in order[:k]})
        assert curve[k] == pytest.approx(expected, abs=1e-4), (k, curve[k], expected)
    assert curve[size] >= 0.9, (size, curve)

    draws = [random.Random(seed).sample(channels, size) for seed in range(8)]
    draws = [kept for kept in draws if {c.name for c in kept} != {c.name for c in order[:size]}]
    variants = [kept_variant(channels, []), *(kept_variant(channels, kept) for kept in draws), Variant()]
    kept_by_random = faithfulness(variant_losses(interventions, variants, sample, 4096).mean(1))[1:-1]
    assert draws and sum(kept_by_random) / len(draws) < 0.5 * curve[size], kept_by_random


def test_an_ingest_stores_ranks_and_the_faithfulness_curve(reference_checkpoints, tmp_path):
    """Ranks follow the effects, and the stored curve on repeated sequences is what hooks written in
    the test give for each prefix of the channels by effect, on the ingest's own held-out prompts."""
    config = IngestConfig(n_seq=48)
    final = reference_checkpoints[-1]
    [path] = ingest(str(final), [], ["repeated", "random"], tmp_path, config, progress=False, echo=lambda _: None)
    activity = read_artifact(path).tables["activity"]
    for name, rows in activity.groupby("slice"):  # repeated, random and their union
        rows = rows.sort_values("effect_rank")
        assert rows["effect_rank"].tolist() == list(range(1, len(rows) + 1)), name
        assert rows["ablation"].is_monotonic_decreasing, name
    assert set(activity["slice"]) == {"repeated", "random", "repeated+random"}
    model = load_model(str(final))
    data = load_slice("repeated", model.spec, None, model.spec.n_ctx, config.n_seq, config.seed)
    tokens = effect_sample(data.split(config.holdout, config.seed)[1], config).tokens
    rows = activity[activity["slice"] == "repeated"].sort_values("effect_rank")
    for k in (1, 3, 5):
        expected = plain_faithfulness(model, tokens, set(rows["block"].iloc[:k]))
        assert rows["faithfulness"].iloc[k - 1] == pytest.approx(expected, abs=1e-4), k
