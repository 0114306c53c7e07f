"""The adapter's hook sites match the weights, and every gradient the statistics pass reads is
the true gradient (checked against torch.autograd.grad of an additive probe at the same place)."""

import json

import pytest
import torch
from builders import random_gpt2, random_gptj, random_llama, random_neox

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.attribution import pull_back
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.metrics import sampled_loss
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.statistics import GRADIENT_SITES, fisher_gradients

BUILDERS = {
    "gpt2": random_gpt2,
    "neox": random_neox,
    "neox-parallel": lambda p: random_neox(p, use_parallel_residual=True),
    "llama": random_llama,
    "gptj": random_gptj,
}


@pytest.fixture(params=sorted(BUILDERS), scope="module")
def model(request, tmp_path_factory):
    return load_model(str(BUILDERS[request.param](tmp_path_factory.mktemp(request.param))))


def tokens(model, n=3, length=12, seed=1):
    return torch.randint(0, model.spec.d_vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_head_and_mlp_sites_match_the_folded_weights(model):
    w, batch = model.weights, tokens(model)
    names = [site(s, l) for l in range(model.spec.n_layers) for s in ("attn_x", "q", "k", "v", "z", "attn_out")]
    with torch.no_grad():
        _, acts = model.run_capturing(batch, names)
    for l in range(model.spec.n_layers):
        x = acts[site("attn_x", l)]
        for role, W, b in (("q", w.W_Q, w.b_Q), ("k", w.W_K, w.b_K), ("v", w.W_V, w.b_V)):
            expected = torch.einsum("bpd,hde->bphe", x, W[l]) + b[l]
            torch.testing.assert_close(acts[site(role, l)], expected, atol=1e-4, rtol=1e-4)
        head_sum = torch.einsum("bphe,hed->bpd", acts[site("z", l)], w.W_O[l])
        residual = acts[site("attn_out", l)] - head_sum  # = b_O, the same at every position
        torch.testing.assert_close(residual, residual[:1, :1].expand_as(residual), atol=1e-4, rtol=1e-4)


def additive_probe_gradient(model, batch, hook_name, seed):
    """dL/dδ for δ = 0 added at ``hook_name``: the gradient there, by a route independent of capture
    (L the same sampled loss: the same generator seed samples the same labels from the same logits)."""
    probe = {}

    def add(activation, hook):
        probe["delta"] = torch.zeros_like(activation, requires_grad=True)
        return activation + probe["delta"]

    logits = model.run(batch.tokens, [(hook_name, add)])
    loss = sampled_loss(logits, batch.tokens, batch.targets(), torch.Generator().manual_seed(seed))
    return torch.autograd.grad(loss, probe["delta"])[0]


def test_every_gradient_the_statistics_pass_reads_is_the_autograd_gradient(model):
    batch = DataSlice.of_tokens("probe", "random tokens", tokens(model))
    _, _, grads = fisher_gradients(model, batch, torch.Generator().manual_seed(5))
    checked = [site(name, l) for name in GRADIENT_SITES for l in range(model.spec.n_layers)]
    checked += [site("embed"), site("final_x")]
    assert set(grads) == set(checked)
    for name in checked:
        expected = additive_probe_gradient(model, batch, name, seed=5)
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(grads[name], expected, atol=1e-5, rtol=1e-4, msg=name)


def test_gradients_compose_along_the_residual_stream(model):
    """g(attn_out) = g(mlp_out) + the MLP path pulled back through its normalisation (sequential
    block), or = g(mlp_out) (parallel block, where both join at one point). This also checks the
    normalisation pull-back the attribution uses."""
    batch = DataSlice.of_tokens("probe", "random tokens", tokens(model))
    _, acts, grads = fisher_gradients(model, batch, torch.Generator().manual_seed(5))
    with torch.no_grad():  # the residual the MLP normalises (the statistics pass does not keep it)
        _, residuals = model.run_capturing(batch.tokens, [site("resid_mid", l) for l in range(model.spec.n_layers)])
    for l in range(model.spec.n_layers):
        expected = grads[site("mlp_out", l)]
        if not model.spec.parallel_attn_mlp:
            expected = expected + pull_back(
                grads[site("mlp_x", l)],
                acts[site("mlp_x", l)],
                residuals[site("resid_mid", l)],
                model.spec.normalization,
            )
        torch.testing.assert_close(grads[site("attn_out", l)], expected, atol=1e-5, rtol=1e-3)


def test_parallel_blocks_are_recognised(tmp_path):
    assert load_model(str(random_neox(tmp_path / "p", use_parallel_residual=True))).spec.parallel_attn_mlp
    assert not load_model(str(random_neox(tmp_path / "s"))).spec.parallel_attn_mlp


def test_unknown_model_name_offline_is_a_clear_error():
    with pytest.raises(UserError, match="Could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "nothing-here"))


def test_directory_without_weights_is_a_clear_error(tmp_path):
    folder = random_gpt2(tmp_path / "m")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(UserError, match="no weights"):
        load_model(str(folder))


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path):
    folder = random_gpt2(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["n_embd"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"do not fit its config\.json"):
        load_model(str(folder))


def test_nan_weights_are_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = random_gpt2(tmp_path / "m")
    weights_file = next(folder.glob("*.safetensors"))
    weights = load_file(weights_file)
    name = next(k for k in weights if k.endswith("attn.c_attn.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, weights_file, metadata={"format": "pt"})
    with pytest.raises(UserError, match="NaN or inf"):
        load_model(str(folder))
