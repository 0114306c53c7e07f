"""How far the sampled estimators are from the exact ones, on the reference model.

    python benchmarks/estimators.py [--checkpoint step-03000] [--effect-tokens 2048] [--statistics-tokens 4096]

The ingest bounds its per-channel costs with samples (docs/design.md, "Fidelity"): the exact
ablation effect of every channel on a slice, and its channel recovery (the blocks' fidelity), come
from at most ``--effect-tokens`` held-out tokens per slice; the moments from at most
``--statistics-tokens`` fitting tokens. This prints, per slice, the Spearman rank correlation
between each sampled per-channel estimate and the same quantity over every sequence of the slice
(ablation) or every held-out sequence (channel recovery), and between the edge scores of sampled
and full moments.
"""

from __future__ import annotations

import click
import pandas as pd
import torch

from circuit_atlas.ingest.attribution import slice_scores
from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.fidelity import ablation_effects, ablation_losses, channel_recovery, compression_losses
from circuit_atlas.ingest.interventions import Interventions
from circuit_atlas.ingest.metrics import chance_level
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import load_slices
from circuit_atlas.ingest.slice_scorer import effect_sample
from circuit_atlas.ingest.statistics import accumulate_moments
from circuit_atlas.ingest.structural import structural_scores
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.induction import InductionRecipe, train_induction


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's: the Pearson correlation of the ranks."""
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    keys = [k for k in a if a[k] is not None and b.get(k) is not None]
    return rank_correlation([a[k] for k in keys], [b[k] for k in keys])


def sampled_and_exact_effects(model, compression, layout, slices, config):
    """Per slice: (sampled, exact) ablation effects; and (sampled, exact) channel recovery over the
    slices, each set of prompts ablated to its own baseline (``config.ablation``)."""

    def interventions_on(data):
        return Interventions(model, compression, {data.name: Baseline.measure(model, data, config.ablation)})

    names = [c.name for c in layout.channels]
    effects, clean_parts, ablated_parts, compressed_parts = (
        {},
        {"sample": [], "all": []},
        {"sample": [], "all": []},
        {"sample": [], "all": []},
    )
    for s in slices:
        _, held_out = s.split(config.holdout, config.seed)
        sample = effect_sample(held_out, config)
        per = {}
        for which, tokens in (("sample", sample), ("all", s)):
            clean, ablated = ablation_losses(interventions_on(tokens), tokens, config.batch_tokens, progress=False)
            per[which] = ablation_effects(names, clean, ablated)
        effects[s.name] = per
        for which, tokens in (("sample", sample), ("all", held_out)):
            interventions = interventions_on(tokens)
            clean, ablated = ablation_losses(interventions, tokens, config.batch_tokens, progress=False)
            clean_parts[which].append(clean)
            ablated_parts[which].append(ablated)
            compressed_parts[which].append(
                compression_losses(interventions, tokens, config.batch_tokens, progress=False)
            )
    recovery = {
        which: channel_recovery(
            names,
            torch.cat(clean_parts[which]),
            torch.cat(compressed_parts[which], 1),
            torch.cat(ablated_parts[which], 1),
            chance_level("next_token_loss", model.spec.d_vocab),  # the built-in slices
        )
        for which in ("sample", "all")
    }
    return effects, recovery


@click.command()
@click.option("--checkpoint", default="step-03000", show_default=True, help="Reference checkpoint folder name.")
@click.option("--effect-tokens", default=IngestConfig.effect_tokens, show_default=True)
@click.option("--statistics-tokens", default=4096, show_default=True, help="The sampled moments' token budget.")
def main(checkpoint: str, effect_tokens: int, statistics_tokens: int) -> None:
    folders = {
        f.name: f
        for f in train_induction(InductionRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)
    }
    model = load_model(str(folders[checkpoint]))
    config = IngestConfig(effect_tokens=effect_tokens, statistics_tokens=statistics_tokens)
    layout = ChannelLayout(model.spec)
    slices = load_slices(model, ["repeated", "random"], config)
    fit = [s.split(config.holdout, config.seed)[0] for s in slices]
    moments = accumulate_moments(model, fit, config.batch_tokens, progress=False)
    compression = Compression(decompose(moments, model.weights), 0.9999, None, config.floor)
    effects, recovery = sampled_and_exact_effects(model, compression, layout, slices, config)
    click.echo(
        f"reference model {checkpoint}, {len(layout.channels)} channels; effect sample "
        f"{effect_tokens} tokens, at least {config.effect_prompts} prompts, per slice of held-out sequences, "
        "exact = every sequence"
    )
    for name, per in effects.items():
        click.echo(
            f"  ablation effect on {name}: Spearman {spearman(per['sample'], per['all']):.3f}  "
            f"(largest |sampled - exact| {max(abs(per['sample'][k] - per['all'][k]) for k in per['all']):.3f} nats)"
        )
    click.echo(f"  fidelity: Spearman {spearman(recovery['sample'], recovery['all']):.3f}")

    fit_tokens = sum(f.n_tokens for f in fit)
    sampled_fit = [f.spread(max(1, f.n_sequences * statistics_tokens // fit_tokens)) for f in fit]
    sampled = accumulate_moments(model, sampled_fit, config.batch_tokens, progress=False)
    sampled_compression = Compression(decompose(sampled, model.weights), 0.9999, None, config.floor)
    full_scores = structural_scores(compression, moments, layout, model.weights.W_O)
    sampled_scores = structural_scores(sampled_compression, sampled, layout, model.weights.W_O)
    mask = layout.feeds_mask
    click.echo(
        f"moments from {sum(f.n_tokens for f in sampled_fit):,} of {fit_tokens:,} fitting tokens, edge scores "
        f"against the full ones:"
    )
    for score in ("weight", "strength", "flow"):
        a, b = getattr(full_scores, score)[mask], getattr(sampled_scores, score)[mask]
        click.echo(f"  {score}: Spearman {rank_correlation(a.tolist(), b.tolist()):.3f}")
    repeated = next(s for s in slices if s.name == "repeated")
    full_attr = slice_scores(model, compression, moments, layout, repeated, progress=False).attribution[mask]
    sampled_attr = slice_scores(model, sampled_compression, sampled, layout, repeated, progress=False).attribution[mask]
    click.echo(f"  attribution on repeated: Spearman {rank_correlation(full_attr.tolist(), sampled_attr.tolist()):.3f}")


if __name__ == "__main__":
    main()
