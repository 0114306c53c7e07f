"""Fidelity on the trained reference model: the default search reaches the 0.95 target with all
channels compressed at once, and compression really is lossy below it."""

import math

import pytest
import torch

from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.data import DataSlice, synthetic_tokens
from circuit_atlas.ingest.fidelity import (
    RANK_FRACTION_GRID,
    ablation_effects,
    ablation_errors,
    ablation_losses,
    channel_recovery,
    choose_rank_fraction,
    compression_losses,
    variant_losses,
)
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.statistics import accumulate_moments


def test_searched_rank_fraction_recovers_the_target_with_every_channel_compressed(reference_checkpoints):
    model = load_model(str(reference_checkpoints[-1]))
    layout = ChannelLayout(model.spec)
    vocab, length = model.spec.d_vocab, model.spec.n_ctx
    data = torch.cat(
        [synthetic_tokens("repeated", vocab, 96, length, 1), synthetic_tokens("random", vocab, 96, length, 2)]
    )
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    fit = DataSlice.of_tokens("fit", "fit", data[order[:160]])
    heldout = DataSlice.of_tokens("heldout", "heldout", data[order[160:]])
    moments = accumulate_moments(model, [fit], progress=False)
    decompositions = decompose(moments, model.weights)
    baselines = {"heldout": Baseline.measure(model, heldout, "position")}
    _compression, report = choose_rank_fraction(
        model, decompositions, baselines, layout, [heldout], 0.95, None, None, 1e-3
    )
    print(f"fraction {report.fraction}, loss recovered {report.loss_recovered:.4f}, mean ranks {report.mean_ranks}")
    assert report.loss_recovered >= 0.95
    assert report.loss_ablated > report.loss_clean + 0.2  # ablating everything really hurts
    # The search returns the smallest grid rank fraction that passes: the one below it fails.
    below = [f for f in RANK_FRACTION_GRID if f < report.fraction]
    if below:
        lower_compression = Interventions(model, Compression(decompositions, below[-1], None, 1e-3), baselines)
        lower = float(variant_losses(lower_compression, [Variant.compressing(*layout.channels)], heldout, 4096).mean())
        assert 1 - (lower - report.loss_clean) / (report.loss_ablated - report.loss_clean) < 0.95
    # Compression at the chosen rank fraction drops dimensions somewhere.
    assert report.mean_ranks["ov"] < model.spec.d_head or report.mean_ranks["mlp_out"] < model.spec.d_model


def test_channel_recovery_effects_and_errors_are_their_definitions(reference_checkpoints):
    """From the losses of single variants run one at a time: a channel's recovery is
    1 - (L_compressed - L_clean) / (L_ablated - L_clean) of its own compression and ablation (null
    where its ablation moves the loss by under twice the standard error of that change), its
    effect the mean of L_ablated - L_clean (positive where it helps) and the effect's standard
    error their standard deviation over sqrt(prompts); the rank search's loss recovered is the same
    ratio with every channel compressed and every channel ablated."""
    model = load_model(str(reference_checkpoints[-1]))
    layout = ChannelLayout(model.spec)
    vocab, length = model.spec.d_vocab, model.spec.n_ctx
    fit = DataSlice.of_tokens("fit", "fit", synthetic_tokens("repeated", vocab, 64, length, 3))
    sample = DataSlice.of_tokens("s", "s", synthetic_tokens("repeated", vocab, 12, length, 4))
    moments = accumulate_moments(model, [fit], progress=False)
    decompositions = decompose(moments, model.weights)
    baselines = {"s": Baseline.measure(model, sample, "position")}
    interventions = Interventions(model, Compression(decompositions, 0.7, None, 1e-3), baselines)
    names = [c.name for c in layout.channels]
    clean, ablated = ablation_losses(interventions, sample, 4096, progress=False)
    compressed_each = compression_losses(interventions, sample, 4096, False)
    recovery = channel_recovery(names, clean, compressed_each, ablated, math.log(vocab))
    effects, errors = ablation_effects(names, clean, ablated), ablation_errors(names, clean, ablated)

    def alone(variant: Variant) -> torch.Tensor:
        return variant_losses(interventions, [variant], sample, 4096)[0]

    reference = alone(Variant())
    for channel in layout.channels:
        compressed, removed = alone(Variant.compressing(channel)), alone(Variant.ablating(channel))
        expected = 1 - (compressed.mean() - reference.mean()) / (removed.mean() - reference.mean())
        assert effects[channel.name] == pytest.approx(float((removed - reference).mean()), abs=1e-6), channel.name
        spread = float((removed - reference).std() / len(reference) ** 0.5)
        assert errors[channel.name] == pytest.approx(spread, rel=1e-4, abs=1e-9), channel.name
        if float((removed - reference).mean()) >= max(1e-6, 2 * spread):
            assert recovery[channel.name] == pytest.approx(float(expected), abs=1e-5), channel.name
        else:
            assert recovery[channel.name] is None, channel.name
    measured = [r for r in recovery.values() if r is not None]
    assert max(effects.values()) > 0.5 and len(measured) >= 4 and min(measured) < 0.99  # real effects, real losses
    _compression, report = choose_rank_fraction(
        model, decompositions, baselines, layout, [sample], None, 0.7, None, 1e-3
    )
    recovered = 1 - (report.loss_compressed - report.loss_clean) / (report.loss_ablated - report.loss_clean)
    assert report.loss_recovered == pytest.approx(recovered, abs=1e-9)
    assert report.loss_compressed == pytest.approx(float(alone(Variant.compressing(*layout.channels)).mean()))
