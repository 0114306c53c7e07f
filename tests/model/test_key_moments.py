"""The key moments of the statistics pass against direct sums over right-padded prompts, on a causal
and on a bidirectional model: ``kk`` is the keys' spread around each query's attention-weighted mean
key, ``kk_seen`` their spread around the plain mean of the keys the query may see; and a component
that every key shares, however large, adds nothing to them."""

import torch
from builders import task_slice

from circuit_atlas.ingest.model_adapter import site
from circuit_atlas.ingest.statistics import accumulate_moments


def assert_key_moments_are_the_spreads_each_query_sees(model) -> None:
    w = model.weights
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.spec.d_vocab, (n,), generator=generator).tolist() for n in (12, 9, 6, 12)]
    data = task_slice("mixed", prompts)
    moments = accumulate_moments(model, [data], progress=False)
    layers = range(model.spec.n_layers)
    names = [site(s, l) for l in layers for s in ("k", "pattern")]
    with torch.no_grad():
        _, acts = model.run_capturing(data.tokens, names, attention_mask=data.mask)
    for l in layers:
        keys = (acts[site("k", l)] - w.b_K[l]).double()  # [b, p, h, e]
        pattern = acts[site("pattern", l)].double()  # [b, h, query, key]
        weighted, seen = torch.zeros_like(moments.kk[l]), torch.zeros_like(moments.kk_seen[l])
        for b, prompt in enumerate(prompts):
            for i in range(len(prompt)):
                visible = keys[b, : i + 1 if model.spec.causal else len(prompt)]  # [j, h, e]
                a = pattern[b, :, i, : len(visible)]  # [h, j]
                a = a / a.sum(-1, keepdim=True)  # float32 weights sum to one within about 1e-7
                spread = visible - torch.einsum("hj,jhe->he", a, visible)
                weighted += torch.einsum("hj,jhe,jhf->hef", a, spread, spread)
                plain = visible - visible.mean(0)
                seen += torch.einsum("jhe,jhf->hef", plain, plain) / len(visible)
        n = sum(map(len, prompts))
        scale = float(seen.abs().max()) / n
        torch.testing.assert_close(moments.kk[l], weighted / n, rtol=1e-4, atol=1e-5 * scale, msg=f"kk {l}")
        torch.testing.assert_close(moments.kk_seen[l], seen / n, rtol=1e-4, atol=1e-5 * scale, msg=f"kk_seen {l}")


def test_key_moments_are_the_spreads_each_query_sees(small_model):
    assert_key_moments_are_the_spreads_each_query_sees(small_model)


def test_a_component_every_key_shares_adds_nothing_to_the_key_moments(small_model):
    """Every token embedding moved by one vector 1,000 times their spread: the keys share a
    component 1e6 times their variance, which times the float32 softmax's error in its sum would
    otherwise pass for spread."""
    embeddings = small_model.runner.params["embed.W_E"]
    shared = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(3))
    embeddings += 1000 * float(embeddings.std()) * shared / shared.norm() * embeddings.shape[1] ** 0.5
    assert_key_moments_are_the_spreads_each_query_sees(small_model)
