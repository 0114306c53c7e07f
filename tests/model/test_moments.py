"""Every moment the statistics pass accumulates, against a direct sum over the real tokens of a
right-padded task slice (the key moments have their own test, test_key_moments.py): on a causal
and a bidirectional LayerNorm model, a parallel GPT-NeoX block and an RMSNorm Llama. The
activations and gradients come from one capture of the same batch with the same sampled labels;
the sums here are written token by token, site by site, from the moments' definitions."""

import pytest
import torch
from builders import random_llama, random_neox, task_slice

from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.statistics import accumulate_moments, fisher_gradients

LENGTHS = (12, 9, 6, 12)


@pytest.fixture(params=["parallel-neox", "rms-llama"])
def other_block(request, tmp_path):
    if request.param == "parallel-neox":
        return load_model(str(random_neox(tmp_path / "m", seed=3, use_parallel_residual=True)))
    return load_model(str(random_llama(tmp_path / "m", seed=4)))


def direct_moments(model, data, seed: int) -> dict[str, torch.Tensor]:
    """Each moment as a sum over real tokens (b, i) of its definition, divided by their count."""
    w, spec = model.weights, model.spec
    acts, grads = fisher_gradients(model, data, torch.Generator().manual_seed(seed))[1:]
    real = [(b, i) for b in range(data.tokens.shape[0]) for i in range(int(data.mask[b].sum()))]
    d = lambda t: t.detach().double()  # noqa: E731
    sums: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0) + value

    def outer(v: torch.Tensor) -> torch.Tensor:
        return torch.outer(v, v)

    for b, i in real:
        for l in range(spec.n_layers):
            pattern = d(acts[site("pattern", l)][b, :, i])  # [h, key]
            q, v = d(acts[site("q", l)][b, i]) - d(w.b_Q[l]), d(acts[site("v", l)][b]) - d(w.b_V[l])
            z = d(acts[site("z", l)][b, i])
            for h in range(spec.n_heads):
                add(f"qq.{l}.{h}", outer(q[h]))
                add(f"vv.{l}.{h}", sum(pattern[h, j] * outer(v[j, h]) for j in range(v.shape[0])))
                add(f"zz.{l}.{h}", outer(z[h]))
                add(f"z_mean.{l}.{h}", z[h])
            add(f"G_attn.{l}", outer(d(grads[site("attn_out", l)][b, i])))
            if spec.has_mlp:
                x, y = d(acts[site("mlp_x", l)][b, i]), d(acts[site("mlp_out", l)][b, i])
                add(f"S_mlp.{l}", outer(x))
                add(f"H_mlp.{l}", outer(d(grads[site("mlp_x", l)][b, i])))
                add(f"Y_mlp.{l}", outer(y))
                add(f"y_mlp_mean.{l}", y)
                add(f"G_mlp.{l}", outer(d(grads[site("mlp_out", l)][b, i])))
        embed = d(acts[site("embed")][b, i])
        add("Y_embed", outer(embed))
        add("embed_mean", embed)
        add("G_embed", outer(d(grads[site("embed")][b, i])))
        if site("pos_embed") in acts:
            pos = d(acts[site("pos_embed")][0 if acts[site("pos_embed")].shape[0] == 1 else b, i])
            add("Y_pos", outer(pos))
            add("pos_mean", pos)
        final = d(acts[site("final_x")][b, i])
        add("S_final", outer(final))
        add("final_mean", final)
        add("H_final", outer(d(grads[site("final_x")][b, i])))
    return {name: total / len(real) for name, total in sums.items()}


def stored(moments, name: str) -> torch.Tensor:
    """The moment ``name`` (``qq.0.1``: layer 0, head 1) from the statistics pass."""
    field, *index = name.split(".")
    value = getattr(moments, field)
    for i in index:
        value = value[int(i)]
    return value


def assert_moments_are_direct_sums(model) -> None:
    generator = torch.Generator().manual_seed(1)
    vocab = model.spec.d_vocab
    prompts = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in LENGTHS]
    data = task_slice("mixed", prompts)
    moments = accumulate_moments(model, [data], batch_tokens=4096, seed=7, progress=False)
    expected = direct_moments(model, data, seed=7)
    assert moments.n_tokens == sum(LENGTHS)
    fields = {name.split(".")[0] for name in expected}
    assert fields >= {"qq", "vv", "zz", "z_mean", "G_attn", "Y_embed", "G_embed", "S_final", "H_final"}
    assert ("S_mlp" in fields) == model.spec.has_mlp and ("Y_pos" in fields) == (model.spec.positional == "standard")
    for name, value in expected.items():
        scale = float(value.abs().max())
        torch.testing.assert_close(stored(moments, name), value, rtol=1e-4, atol=1e-6 * scale + 1e-12, msg=name)


def test_moments_are_direct_sums(small_model):
    assert_moments_are_direct_sums(small_model)


def test_moments_are_direct_sums_on_a_parallel_and_an_rmsnorm_block(other_block):
    assert_moments_are_direct_sums(other_block)
