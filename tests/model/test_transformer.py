"""The runner (ingest/transformer.py) reproduces TransformerLens's own forward of every family it
runs, and its two attention paths (scaled_dot_product_attention, explicit softmax) agree."""

import pytest
import torch
from builders import random_gpt2, random_gptj, random_llama, random_neox
from transformer_lens.model_bridge import TransformerBridge

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.transformer import Transformer, TransformerConfig, parameter_shapes

FAMILIES = {
    "gpt2": random_gpt2,  # LayerNorm, learned positions, GELU (tanh)
    "neox": random_neox,  # rotary on halves, GELU
    "neox-parallel-partial-rotary": lambda p: random_neox(p, use_parallel_residual=True, rotary_pct=0.5),
    "llama": random_llama,  # RMSNorm, gated SiLU MLP, grouped-query attention
    "gptj": random_gptj,  # parallel block with one LayerNorm, rotary on adjacent pairs of 4 dims
}


@pytest.fixture(params=sorted(FAMILIES), scope="module")
def folder(request, tmp_path_factory):
    return FAMILIES[request.param](tmp_path_factory.mktemp(request.param))


def tokens(vocab, n=3, length=12, seed=1):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_runner_logits_equal_the_bridge_forward_in_compatibility_mode(folder):
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
    bridge.enable_compatibility_mode(disable_warnings=True)
    model = load_model(str(folder))
    batch = tokens(model.spec.d_vocab)
    with torch.no_grad():
        expected = bridge(batch)
        got = model.run(batch)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_explicit_softmax_and_fused_attention_agree_with_and_without_padding(folder):
    model = load_model(str(folder))
    batch = tokens(model.spec.d_vocab)
    real = torch.ones_like(batch, dtype=torch.bool)
    real[0, 7:] = False  # the first prompt is right-padded after 7 tokens
    pattern_hooks = [(site("pattern", l), lambda a, hook: a) for l in range(model.spec.n_layers)]
    with torch.no_grad():
        for mask in (None, real):
            fused = model.run(batch, attention_mask=mask)
            explicit = model.run(batch, pattern_hooks, attention_mask=mask)
            torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)
        padded = model.run(batch, attention_mask=real)
        alone = model.run(batch[:1, :7])
    torch.testing.assert_close(padded[0, :7], alone[0], atol=1e-5, rtol=1e-4)  # padding changes nothing real


def test_hook_names_are_the_sites_and_unknown_names_are_refused(folder):
    model = load_model(str(folder))
    rotary = model.spec.positional == "rotary"
    assert (site("pos_embed") in model.runner.hook_names) != rotary
    assert (site("resid_mid", 0) in model.runner.hook_names) != model.spec.parallel_attn_mlp
    with pytest.raises(ValueError, match="no hook"):
        model.run(tokens(model.spec.d_vocab), [("blocks.0.attn.hook_nothing", lambda a, hook: a)])


def test_a_hook_that_returns_a_tensor_replaces_the_activation(folder):
    """Zeroing every head's z leaves exactly b_O as each attention output."""
    model = load_model(str(folder))
    batch, layers = tokens(model.spec.d_vocab), range(model.spec.n_layers)

    def only_bias(layer):
        b_O = model.runner.params[f"blocks.{layer}.attn.b_O"]
        return lambda attn_out, hook: b_O.expand_as(attn_out)

    zero_heads = [(site("z", l), lambda z, hook: torch.zeros_like(z)) for l in layers]
    with torch.no_grad():
        no_heads = model.run(batch, zero_heads)
        torch.testing.assert_close(no_heads, model.run(batch, [(site("attn_out", l), only_bias(l)) for l in layers]))
        assert not torch.allclose(no_heads, model.run(batch))


def test_unsupported_features_are_clear_errors():
    base = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, d_vocab_out=5, n_ctx=4)
    with pytest.raises(UserError, match="activation 'solu_ln'"):
        TransformerConfig(**base, act_fn="solu_ln")
    with pytest.raises(UserError, match="positional embedding 'alibi'"):
        TransformerConfig(**base, positional="alibi")
    with pytest.raises(UserError, match="rotary_dim 5"):
        TransformerConfig(**base, positional="rotary", rotary_dim=5)
    cfg = TransformerConfig(**base)
    params = {name: torch.zeros(shape) for name, shape in parameter_shapes(cfg).items()}
    with pytest.raises(UserError, match=r"blocks\.0\.attn\.W_Q \(2, 8, 3\) \(expected \(2, 8, 4\)\)"):
        Transformer(cfg, {**params, "blocks.0.attn.W_Q": torch.zeros(2, 8, 3)}, torch.device("cpu"))
