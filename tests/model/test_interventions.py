"""Interventions stacked along the batch are exact per variant, and equal plain hooks."""

import pytest
import torch
from builders import random_gpt2, random_neox

from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.fidelity import sequence_losses, variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.statistics import accumulate_moments

BUILDERS = {"gpt2": random_gpt2, "neox": random_neox}


@pytest.fixture(params=sorted(BUILDERS), scope="module")
def setup(request, tmp_path_factory):
    model = load_model(str(BUILDERS[request.param](tmp_path_factory.mktemp(request.param))))
    tokens = torch.randint(0, model.spec.d_vocab, (24, 12), generator=torch.Generator().manual_seed(3))
    moments = accumulate_moments(model, tokens, progress=False)
    decompositions = decompose(moments, model.weights)
    return model, decompositions, moments, tokens[:6]


def test_every_variant_in_one_batch_equals_that_variant_alone(setup):
    model, decompositions, moments, sample = setup
    interventions = Interventions(model, Compression(decompositions, 0.7, None, 1e-3), moments)
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


def test_ablating_a_head_replaces_its_output_by_the_mean(setup):
    model, decompositions, moments, sample = setup
    interventions = Interventions(model, Compression(decompositions, 0.7, None, 1e-3), moments)
    head = ChannelLayout(model.spec).heads(1)[2]
    [losses] = variant_losses(interventions, [Variant.ablating(head)], sample, 4096)

    def mean_z(z, hook):
        z = z.clone()
        z[:, :, head.head] = moments.z_mean[head.layer, head.head].float()
        return z

    with torch.no_grad():
        expected = sequence_losses(model.run(sample, [(site("z", head.layer), mean_z)]), sample)
    torch.testing.assert_close(losses, expected.double(), rtol=1e-5, atol=1e-6)


def test_full_rank_compression_of_everything_is_the_clean_model(setup):
    model, decompositions, moments, sample = setup
    interventions = Interventions(model, Compression(decompositions, 1.0, None, 0.0), moments)
    everything = ChannelLayout(model.spec).channels
    clean, compressed = variant_losses(interventions, [Variant(), Variant.compressing(*everything)], sample, 4096)
    torch.testing.assert_close(compressed, clean, rtol=1e-4, atol=1e-4)
