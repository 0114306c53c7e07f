"""The tracr fixtures (reference/tracr/, written by reference/tracr_fixtures.py with tracr, which CI
does not install) load through the native path, reproduce tracr's own outputs, and their weights
read and write exactly the residual dimensions of the compiled layout."""

import json

import pytest
import torch

from circuit_atlas.ingest.fingerprints import probe_slice
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.reference.tracr_fixtures import FIXTURES, PROGRAMS


@pytest.fixture(params=PROGRAMS, scope="module")
def compiled(request):
    folder = FIXTURES / request.param
    model = load_model(str(folder / "config.json"), str(folder / "weights.pt"))
    return model, json.loads((folder / "layout.json").read_text())


def test_fixture_reproduces_tracr_outputs_in_one_padded_batch(compiled):
    model, layout = compiled
    samples = layout["samples"]
    length = max(len(s["tokens"]) for s in samples)
    pad = layout["input_vocab"]["PAD"]
    tokens = torch.tensor([s["tokens"] + [pad] * (length - len(s["tokens"])) for s in samples])
    real = torch.tensor([[i < len(s["tokens"]) for i in range(length)] for s in samples])
    with torch.no_grad():
        logits = model.run(tokens, attention_mask=real)
    for row, sample in zip(logits, samples):
        n = len(sample["tokens"])
        tracr = torch.tensor(sample["logits"])  # tracr's output space at every position after BOS
        torch.testing.assert_close(row[1:n], tracr - tracr.mean(-1, keepdim=True), atol=1e-5, rtol=1e-5)
        assert row[1:n].argmax(-1).tolist() == sample["output"]
    assert model.spec.normalization == "none" and not model.spec.causal
    assert model.spec.d_vocab_out == len(layout["output_vocab"]) != model.spec.d_vocab


def dims(labels, layout):
    return sorted(layout["residual"].index(label) for label in labels)


def nonzero(matrix, axis):
    """Indices of the non-zero rows (axis=1) or columns (axis=0) of ``matrix``."""
    return torch.nonzero(matrix.abs().amax(axis) > 1e-6).flatten().tolist()


def test_weights_read_and_write_exactly_the_compiled_layout(compiled):
    model, layout = compiled
    params, w = model.runner.params, model.weights
    channels = layout["channels"]
    for l in range(model.spec.n_layers):
        for h in range(model.spec.n_heads):
            head = channels.get(f"L{l}H{h}", {"q": [], "k": [], "v": [], "out": []})
            qk = w.W_Q[l, h] @ w.W_K[l, h].T
            ov = w.W_V[l, h] @ w.W_O[l, h]
            assert nonzero(qk, 1) == dims(head["q"], layout) and nonzero(qk, 0) == dims(head["k"], layout)
            assert nonzero(ov, 1) == dims(head["v"], layout) and nonzero(ov, 0) == dims(head["out"], layout)
        mlp = channels.get(f"L{l}.mlp", {"in": [], "out": []})
        assert nonzero(params[f"blocks.{l}.mlp.W_in"], 1) == dims(mlp["in"], layout)
        assert nonzero(params[f"blocks.{l}.mlp.W_out"], 0) == dims(mlp["out"], layout)
    assert nonzero(params["embed.W_E"], 0) == dims(channels["embed"]["out"], layout)
    assert nonzero(params["pos_embed.W_pos"], 0) == dims(channels["pos_embed"]["out"], layout)
    assert nonzero(params["unembed.W_U"], 1) == dims(channels["unembed"]["in"], layout)


def test_probes_of_a_class_output_model_score_its_own_prediction(compiled):
    model, _ = compiled
    tokens = torch.randint(0, model.spec.d_vocab, (3, model.spec.n_ctx), generator=torch.Generator().manual_seed(0))
    probe = probe_slice(model, "random", tokens)
    with torch.no_grad():
        prediction = model.run(tokens).argmax(-1)
    assert probe.metric == "label_loss" and torch.equal(probe.answers, prediction)
    assert probe.positions.tolist() == [list(range(model.spec.n_ctx))] * 3
