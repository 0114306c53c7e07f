"""Compressed models and circuits that run (ingest/runnable.py), on the attention-only induction model:
a runnable rebuilt from the artifact reproduces the stored all-at-once recovery and circuit
faithfulness, and the circuit's loss is what the plain PyTorch model gives with the same heads
mean-ablated by a hook written here (reference/attention_only.py, not the catalog's runner)."""

import pytest
import torch

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.runnable import Runnable
from circuit_atlas.reference.attention_only import HOOK_Z, AttentionOnly, AttentionOnlyRecipe

RECIPE = AttentionOnlyRecipe()


@pytest.fixture(scope="module")
def manifest(attention_only_artifact):
    return read_artifact(attention_only_artifact).manifest


def stored_circuit(manifest, name):
    return next(s["circuit"] for s in manifest["slices"] if s["name"] == name)


def test_the_compressed_model_recovers_the_stored_share_of_the_loss(attention_only_artifact, manifest):
    compressed = Runnable.from_artifact(attention_only_artifact, compressed=True)
    assert compressed.recovery() == pytest.approx(manifest["fidelity"]["loss_recovered"], abs=1e-6)
    clean = Runnable.from_artifact(attention_only_artifact)
    assert clean.recovery() == pytest.approx(1.0, abs=1e-9)
    one = Runnable.from_artifact(attention_only_artifact, compressed=["L1H0"])
    assert one.loss("repeated").mean != clean.loss("repeated").mean


def test_the_circuit_keeps_its_stored_faithfulness_and_runs_as_a_plain_hook_says(
    attention_only_artifact, attention_only_checkpoints, manifest
):
    """The stored circuit by faithfulness on repeated tokens, run: its faithfulness is the stored one;
    its loss on the slice's held-out sample is the plain model's with every head outside it replaced by
    its per-position mean over that sample (the position embedding's own per-position mean changes
    nothing); its accuracy is in [0, 1] only for task slices."""
    circuit = Runnable.from_artifact(attention_only_artifact, circuit="repeated")
    assert circuit.faithfulness("repeated") == pytest.approx(
        stored_circuit(manifest, "repeated")["faithfulness"], abs=1e-6
    )
    kept = set(circuit.circuits["repeated"])
    assert {"embed", "unembed"} <= kept and any(name.startswith("L1H") for name in kept)
    sample = circuit.samples["repeated"].tokens
    model = AttentionOnly.from_checkpoint(RECIPE, attention_only_checkpoints[-1])
    captured = {}

    def keep(layer):
        def hook(z):
            captured[layer] = z
            return z

        return hook

    with torch.no_grad():
        model(sample, {HOOK_Z.format(l): keep(l) for l in range(RECIPE.n_layers)})

    def ablating(layer):
        def hook(z):
            z = z.clone()
            for h in range(RECIPE.n_heads):
                if f"L{layer}H{h}" not in kept:
                    z[:, :, h] = captured[layer][:, :, h].mean(0)
            return z

        return hook

    with torch.no_grad():
        logits = model(sample, {HOOK_Z.format(l): ablating(l) for l in range(RECIPE.n_layers)})
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), sample[:, 1:], reduction="none")
    assert circuit.loss("repeated").mean == pytest.approx(float(plain.mean(1).mean()), abs=1e-4)
    with pytest.raises(UserError, match="scores next_token_loss"):
        circuit.accuracy("repeated")


def test_generation_is_seeded_and_bad_choices_are_one_line(attention_only_artifact):
    circuit = Runnable.from_artifact(attention_only_artifact, circuit="repeated")
    prompt = torch.tensor([5, 9, 13, 2, 5, 9])
    first, again = circuit.generate(prompt, 5, seed=1), circuit.generate(prompt, 5, seed=1)
    assert torch.equal(first, again) and first.shape == (11,) and torch.equal(first[:6], prompt)
    for kwargs, message in (
        ({"circuit": "nowhere"}, "No circuit on slice 'nowhere'"),
        ({"compressed": ["L9H9"]}, "No channel 'L9H9'"),
        ({"compressed": True, "circuit": "repeated"}, "either compressed or a circuit"),
    ):
        with pytest.raises(UserError, match=message):
            Runnable.from_artifact(attention_only_artifact, **kwargs)
    with pytest.raises(UserError, match="No slice 'nowhere'"):
        circuit.loss("nowhere")
    with pytest.raises(UserError, match="No slice 'nowhere'"):
        circuit.run(prompt.view(1, -1), "nowhere")
    assert circuit.circuits["random"] == []  # no behaviour on random tokens: an empty circuit, by slice


def test_the_circuit_at_edge_level_keeps_its_strong_edges_and_with_every_edge_is_the_channel_circuit(
    attention_only_artifact,
):
    """At edge level with every edge between its channels kept, the circuit is the channel circuit
    (the other writers ablated edge by edge rather than channel by channel). Keeping only the edges
    between them of at least 0.02 nats on the slice (patched where measured), it ablates every other
    edge, and the weak edges it drops (some of which hurt) cost nothing: it keeps more of the behaviour
    than the channel circuit."""
    channels = Runnable.from_artifact(attention_only_artifact, circuit="repeated")
    every = Runnable.from_artifact(attention_only_artifact, circuit="repeated", min_attribution=-float("inf"))
    strong = Runnable.from_artifact(attention_only_artifact, circuit="repeated", min_attribution=0.02)
    assert every.loss("repeated").mean == pytest.approx(channels.loss("repeated").mean, abs=1e-5)
    rows = read_artifact(attention_only_artifact).tables["slice_edges"].query("slice == 'repeated'")
    members = set(channels.circuits["repeated"])
    inside = rows[rows.writer.isin(members) & rows.reader.isin(members)]
    strong_rows = inside[inside.patched.fillna(inside.attribution) >= 0.02]
    assert 0 < len(strong_rows) < len(inside)
    feeding = len(every.ablated_edges) + len(inside)
    assert len(strong.ablated_edges) == feeding - len(strong_rows)
    ablated = {(w.name, r.channel.name, r.role) for w, r in strong.ablated_edges}
    assert {(w.name, r.channel.name, r.role) for w, r in every.ablated_edges} <= ablated
    assert not ablated & set(zip(strong_rows.writer, strong_rows.reader, strong_rows.role))
    assert strong.faithfulness("repeated") > channels.faithfulness("repeated") > 0.9
    tokens = strong.samples["repeated"].tokens[:2]
    assert strong.run(tokens).shape == (*tokens.shape, 64)
