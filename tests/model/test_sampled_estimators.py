"""The sampled per-channel estimators rank channels as the same quantities over every sequence do,
on the trained reference model (README, "Estimators at scale")."""

import pandas as pd

from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.fidelity import ablation_effects, ablation_losses
from circuit_atlas.ingest.interventions import Interventions
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import load_slices
from circuit_atlas.ingest.slice_scorer import effect_sample
from circuit_atlas.ingest.statistics import accumulate_moments


def rank_correlation(a: dict[str, float], b: dict[str, float]) -> float:
    keys = sorted(a)
    return float(pd.Series([a[k] for k in keys]).rank().corr(pd.Series([b[k] for k in keys]).rank()))


def test_sampled_ablation_effects_rank_channels_like_every_sequence(reference_checkpoints):
    model = load_model(str(reference_checkpoints[-1]))
    config = IngestConfig()
    layout = ChannelLayout(model.spec)
    names = [c.name for c in layout.channels]
    slices = load_slices(model, ["repeated", "random"], config)
    moments = accumulate_moments(model, [s.split(config.holdout, config.seed)[0] for s in slices], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.9999, None, 1e-3)

    def effects(data):
        """Exact effects on ``data``, ablated to the per-position mean of ``data`` itself."""
        interventions = Interventions(model, compression, {data.name: Baseline.measure(model, data, "position")})
        return ablation_effects(names, *ablation_losses(interventions, data, 4096, progress=False))

    for data in slices:
        held_out = data.split(config.holdout, config.seed)[1]
        sample = effect_sample(held_out, config)  # 51 prompts held out, under the floor of 64: all of them
        assert sample.n_sequences == min(config.effect_prompts, held_out.n_sequences) < data.n_sequences / 4
        sampled, exact = effects(sample), effects(data)
        assert rank_correlation(sampled, exact) >= 0.95, (data.name, sampled, exact)
