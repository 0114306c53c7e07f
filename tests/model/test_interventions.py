"""Interventions stacked along the batch are exact per variant, and equal plain hooks; an ablated
head takes each baseline's value as its definition says (ingest/baselines.py)."""

import dataclasses

import pytest
import torch
from builders import random_gpt2, random_neox

from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import ABLATIONS
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.fidelity import variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.metrics import sequence_losses
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.statistics import accumulate_moments

BUILDERS = {"gpt2": random_gpt2, "neox": random_neox}


@pytest.fixture(params=sorted(BUILDERS), scope="module")
def setup(request, tmp_path_factory):
    model = load_model(str(BUILDERS[request.param](tmp_path_factory.mktemp(request.param))))
    tokens = torch.randint(0, model.spec.d_vocab, (24, 12), generator=torch.Generator().manual_seed(3))
    moments = accumulate_moments(model, [DataSlice.of_tokens("fit", "fit", tokens)], progress=False)
    decompositions = decompose(moments, model.weights)
    return model, decompositions, DataSlice.of_tokens("sample", "sample", tokens[:6])


def baselines(model, sample: DataSlice, kind: str) -> dict[str, Baseline]:
    return {sample.name: Baseline.measure(model, sample, kind, seed=1)}


@pytest.mark.parametrize("kind", ["resample", "position"])
def test_every_variant_in_one_batch_equals_that_variant_alone(setup, kind):
    model, decompositions, sample = setup
    interventions = Interventions(model, Compression(decompositions, 0.7, None, 1e-3), baselines(model, sample, kind))
    channels = ChannelLayout(model.spec).channels
    variants = [
        Variant(),
        *(Variant.ablating(c) for c in channels),
        *(Variant.compressing(c) for c in channels),
        Variant(compress=frozenset(channels[:3]), ablate=frozenset(channels[-2:])),
    ]
    together = variant_losses(interventions, variants, sample, batch_tokens=40)  # batches mix variants
    alone = torch.cat([variant_losses(interventions, [v], sample, batch_tokens=4096) for v in variants])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    assert len({round(float(row.mean()), 6) for row in together}) > len(variants) // 2  # variants really differ


@pytest.mark.parametrize("kind", ABLATIONS)
def test_ablating_a_head_replaces_its_output_by_the_baseline(setup, kind):
    """position: the mean over prompts at each position; mean: over every token; resample: prompt
    i's output is prompt perm[i]'s; counterfactual: its own counterfactual prompt's; zero: zero.
    Computed here from the clean z of the same prompts (and of the counterfactual ones)."""
    model, decompositions, sample = setup
    corrupted = torch.randint(0, model.spec.d_vocab, sample.tokens.shape, generator=torch.Generator().manual_seed(9))
    sample = dataclasses.replace(sample, corrupted=corrupted)
    measured = baselines(model, sample, kind)
    interventions = Interventions(model, Compression(decompositions, 0.7, None, 1e-3), measured)
    head = ChannelLayout(model.spec).heads(1)[2]
    [losses] = variant_losses(interventions, [Variant.ablating(head)], sample, 24)  # 2 prompts a batch
    with torch.no_grad():
        _, acts = model.run_capturing(sample.tokens, [site("z", head.layer)])
    clean = acts[site("z", head.layer)][:, :, head.head].detach()
    with torch.no_grad():
        _, acts = model.run_capturing(corrupted, [site("z", head.layer)])
    patched = acts[site("z", head.layer)][:, :, head.head].detach()
    if kind == "resample":
        permutation = measured[sample.name].permutation.cpu()
        assert sorted(permutation.tolist()) == list(range(sample.n_sequences))
    replacement = {
        "position": lambda: clean.mean(0, keepdim=True).expand_as(clean),
        "mean": lambda: clean.mean((0, 1), keepdim=True).expand_as(clean),
        "resample": lambda: clean[permutation],
        "counterfactual": lambda: patched,
        "zero": lambda: torch.zeros_like(clean),
    }[kind]()

    def replaced_z(z, hook):
        z = z.clone()
        z[:, :, head.head] = replacement
        return z

    with torch.no_grad():
        logits = model.run(sample.tokens, [(site("z", head.layer), replaced_z)])
        expected = sequence_losses(logits, sample.tokens, sample.targets())
    torch.testing.assert_close(losses, expected.double(), rtol=1e-5, atol=1e-6)


def test_full_rank_compression_of_everything_is_the_clean_model(setup):
    model, decompositions, sample = setup
    interventions = Interventions(model, Compression(decompositions, 1.0, None, 0.0), baselines(model, sample, "mean"))
    everything = ChannelLayout(model.spec).channels
    clean, compressed = variant_losses(interventions, [Variant(), Variant.compressing(*everything)], sample, 4096)
    torch.testing.assert_close(compressed, clean, rtol=1e-4, atol=1e-4)
