"""The blocked attribution pass equals the same scores computed densely, whatever the block size."""

from pathlib import Path

import pytest
import torch
from builders import native_model, random_gpt2, random_llama, random_neox, task_slice
from dense import dense_scores

from circuit_atlas.ingest import attribution
from circuit_atlas.ingest.attribution import pull_back, slice_scores
from circuit_atlas.ingest.channels import HEAD_READ_ROLES, ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.statistics import accumulate_moments
from circuit_atlas.ingest.transformer import normalize

NO_NORM = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20, d_mlp=64, normalization_type=None)
BUILDERS = {  # LayerNorm, parallel blocks, RMSNorm, no normalisation
    "gpt2": random_gpt2,
    "neox-parallel": lambda p: random_neox(p, use_parallel_residual=True),
    "llama": random_llama,
    "no-norm": lambda p: native_model(p, act_fn="relu", **NO_NORM),
}


@pytest.fixture(params=sorted(BUILDERS), scope="module")
def setup(request, tmp_path_factory):
    built = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    model = load_model(str(built)) if isinstance(built, Path) else load_model(str(built.config), str(built.weights))
    tokens = torch.randint(0, model.spec.d_vocab, (16, 12), generator=torch.Generator().manual_seed(3))
    moments = accumulate_moments(model, [DataSlice.of_tokens("fit", "fit", tokens)], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.8, None, 1e-3)
    return model, compression, moments, tokens[:5]


@pytest.mark.parametrize("per_block", [10**6, 24, 5], ids=["one block", "two sequences", "positions"])
def test_blocked_scores_equal_the_dense_ones(setup, per_block, monkeypatch):
    model, compression, moments, tokens = setup
    layout = ChannelLayout(model.spec)
    monkeypatch.setitem(attribution.BLOCK_BYTES, "cpu", per_block * attribution.token_bytes(layout))
    assert attribution.block_tokens(layout, model.device) == per_block
    scores = slice_scores(
        model, compression, moments, layout, DataSlice.of_tokens("t", "t", tokens), batch_tokens=36, progress=False
    )
    edges, effects, _ = dense_scores(model, compression, moments, layout, DataSlice.of_tokens("t", "t", tokens))
    mask = layout.feeds_mask.double()
    torch.testing.assert_close(scores.attribution, edges.double().abs().mean(0) * mask, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(scores.attribution_signed, edges.double().mean(0) * mask, rtol=1e-4, atol=1e-7)
    names = [c.name for c in [*layout.writers, layout.unembed]]
    torch.testing.assert_close(
        torch.tensor([scores.activity[n] for n in names], dtype=torch.float64),
        effects.double().abs().mean(0),
        rtol=1e-4,
        atol=1e-7,
    )
    assert scores.attribution.max() > 0 and (scores.attribution * (1 - mask)).abs().max() == 0
    assert set(HEAD_READ_ROLES) <= {r.role for r in layout.readers}


@pytest.mark.parametrize("normalization", ["LN", "RMS", "none"])
def test_pull_back_is_the_gradient_through_the_normalisation(normalization):
    residual = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    residual.requires_grad_(True)
    x = normalize(residual, normalization, eps=0.0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (expected,) = torch.autograd.grad((x * g).sum(), residual)
    torch.testing.assert_close(pull_back(g, x.detach(), residual.detach(), normalization), expected)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_blocked_scores_equal_the_dense_ones_on_a_padded_position_minus_one_task_slice(attention, tmp_path):
    """Beyond next-token data: a task slice scored at each prompt's last real token (the logit
    difference of its answer), right-padded, on a causal and a bidirectional model, in blocks of a few
    positions. Every stored quantity against the dense computation: edge attributions (absolute and
    signed), channel activity (absolute and signed), each prompt's signed effects, mean output norms."""
    files = native_model(
        tmp_path,
        n_layers=2,
        d_model=32,
        n_ctx=16,
        d_head=8,
        n_heads=4,
        d_vocab=20,
        d_mlp=64,
        act_fn="gelu",
        normalization_type="LN",
        attention_dir=attention,
    )
    model = load_model(str(files.config), str(files.weights))
    generator = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 20, (n,), generator=generator).tolist() for n in (12, 7, 10, 5, 12, 9)]
    data = task_slice("task", prompts)
    moments = accumulate_moments(model, [data], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.8, None, 1e-3)
    layout = ChannelLayout(model.spec)
    scores = slice_scores(model, compression, moments, layout, data, batch_tokens=30, progress=False)
    edges, effects, mean_norm = dense_scores(model, compression, moments, layout, data)
    mask = layout.feeds_mask.double()
    close = {"rtol": 1e-4, "atol": 1e-7}
    torch.testing.assert_close(scores.attribution, edges.double().abs().mean(0) * mask, **close)
    torch.testing.assert_close(scores.attribution_signed, edges.double().mean(0) * mask, **close)
    names = [c.name for c in [*layout.writers, layout.unembed]]

    def column(values: dict) -> torch.Tensor:
        return torch.tensor([values[n] for n in names], dtype=torch.float64)

    torch.testing.assert_close(column(scores.activity), effects.double().abs().mean(0), **close)
    torch.testing.assert_close(column(scores.activity_signed), effects.double().mean(0), **close)
    torch.testing.assert_close(scores.sequence_effects.double(), effects.double(), **close)
    torch.testing.assert_close(column(scores.mean_norm), mean_norm.double(), rtol=1e-5, atol=1e-6)
    assert data.metric == "logit_diff" and (data.mask.sum(1) < data.tokens.shape[1]).any()  # padded, last token
    assert effects.abs().max() > 0 and (effects.sum(0) != effects.abs().sum(0)).any()  # signs that differ
