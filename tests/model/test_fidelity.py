"""Fidelity on the trained reference model: the default search reaches the 0.95 target with all
channels compressed at once, and compression really is lossy below it."""

import torch

from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.data import DataSlice, synthetic_tokens
from circuit_atlas.ingest.fidelity import FRACTION_GRID, choose_fraction, variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.statistics import accumulate_moments


def test_searched_fraction_recovers_the_target_with_every_channel_compressed(reference_checkpoints):
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
    _compression, report = choose_fraction(model, decompositions, baselines, layout, [heldout], 0.95, None, None, 1e-3)
    print(f"fraction {report.fraction}, loss recovered {report.loss_recovered:.4f}, mean ranks {report.mean_ranks}")
    assert report.loss_recovered >= 0.95
    assert report.loss_ablated > report.loss_clean + 0.2  # ablating everything really hurts
    # The search returns the smallest grid fraction that passes: the one below it fails.
    below = [f for f in FRACTION_GRID if f < report.fraction]
    if below:
        lower_compression = Interventions(model, Compression(decompositions, below[-1], None, 1e-3), baselines)
        lower = float(variant_losses(lower_compression, [Variant.compressing(*layout.channels)], heldout, 4096).mean())
        assert 1 - (lower - report.loss_clean) / (report.loss_ablated - report.loss_clean) < 0.95
    # Compression at the chosen fraction drops dimensions somewhere.
    assert report.mean_ranks["ov"] < model.spec.d_head or report.mean_ranks["mlp_out"] < model.spec.d_model
