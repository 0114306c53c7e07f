"""The attention-only induction reference model (reference/attention_only.py): no MLPs, LayerNorm,
learned absolute positions, TransformerLens-native checkpoints. Its heads do what their measured
attention says; it ingests end to end; the catalog's ablation effects are what a plain PyTorch
ablation of the model's own forward gives; and on it the per-position and pooled means disagree
where learned positions make them: layer 0."""

import json
from dataclasses import replace

import pytest
import torch
from builders import plain_faithfulness

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.fingerprints import attention_scores, probe_tokens
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.slice_scorer import effect_sample
from circuit_atlas.reference.attention_only import HOOK_Z, NATIVE_CONFIG, AttentionOnly, AttentionOnlyRecipe

RECIPE = AttentionOnlyRecipe()
SLICES = ["repeated", "random"]
ABLATIONS = ("position", "mean", "resample", "zero")
MECHANISM = 0.5  # a previous-token (induction) head puts at least this on the previous token (the induction target)
DIFFUSE = 0.2  # a diffuse head puts less than this on every relative offset (chance about 0.03 to 0.1)


def scores_of(checkpoint) -> dict[str, list[list[float]]]:
    return json.loads((checkpoint.parent / "head_scores.json").read_text())[checkpoint.stem]


def native(checkpoint):
    return load_model(str(checkpoint.parent / NATIVE_CONFIG), str(checkpoint))


def probe() -> torch.Tensor:
    """The recipe's own ground-truth probes (write_head_scores)."""
    return probe_tokens(RECIPE.d_vocab, RECIPE.seq_len, n_seq=64, seed=RECIPE.seed + 99)


def attention_by_offset(checkpoint, layer: int) -> torch.Tensor:
    """[head, offset]: the mean attention from a query to the key ``offset`` tokens before it."""
    name = site("pattern", layer)
    with torch.no_grad():
        _, acts = native(checkpoint).run_capturing(probe(), [name])
    pattern, n = acts[name].float(), RECIPE.seq_len
    return torch.stack([pattern[:, :, torch.arange(o, n), torch.arange(n - o)].mean((0, 2)) for o in range(n)], 1)


def roles(checkpoint) -> dict[str, list[str]]:
    """Heads by what their attention does: layer 0's previous-token heads and diffuse heads (no
    relative offset gets DIFFUSE), layer 1's induction heads."""
    scores, offsets = scores_of(checkpoint), attention_by_offset(checkpoint, 0)
    return {
        "previous_token": [f"L0H{h}" for h, v in enumerate(scores["previous_token"][0]) if v >= MECHANISM],
        "diffuse": [f"L0H{h}" for h in range(RECIPE.n_heads) if offsets[h].max() < DIFFUSE],
        "induction": [f"L1H{h}" for h, v in enumerate(scores["induction"][1]) if v >= MECHANISM],
    }


def test_layer_0_has_a_previous_token_head_and_layer_1_induction_heads(attention_only_checkpoints):
    first, final = attention_only_checkpoints[0], attention_only_checkpoints[-1]
    model = native(final)
    assert model.spec.n_layers == 2 and not model.spec.has_mlp and model.spec.positional == "standard"
    measured = attention_scores(model, probe())
    for name, rows in scores_of(final).items():  # the shipped ground truth is what the attention measures here
        assert torch.tensor(rows) == pytest.approx(measured[name], abs=1e-4), name
    found = roles(final)
    assert len(found["previous_token"]) == 1 and len(found["induction"]) >= 2 and found["diffuse"], found
    # the model predicts a repeat: far below chance (log 64 = 4.16 nats) on the second half only
    tokens = probe()
    with torch.no_grad():
        logits = AttentionOnly.from_checkpoint(RECIPE, final)(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    half = tokens.shape[1] // 2
    assert loss[:, half:].mean() < 1.0 and loss[:, : half - 1].mean() > 3.5
    # before training no head does either
    untrained = scores_of(first)
    assert max(v for name in ("previous_token", "induction") for row in untrained[name] for v in row) < 0.1


@pytest.fixture(scope="module")
def artifacts(attention_only_checkpoints, tmp_path_factory):
    """The final checkpoint ingested on repeated and random tokens with the default settings, under
    each ablation (position is the default)."""
    final = attention_only_checkpoints[-1]
    out = tmp_path_factory.mktemp("attention-only")
    found = {}
    for ablation in ABLATIONS:
        [path] = ingest(
            str(final.parent / NATIVE_CONFIG),
            [str(final)],
            SLICES,
            out / ablation,
            replace(IngestConfig(), ablation=ablation),
            progress=False,
            echo=lambda _: None,
        )
        found[ablation] = read_artifact(path)
    return final, found


def stored_effects(artifact, slice_name: str, blocks: str = r"L\dH\d") -> dict[str, float]:
    """The catalog's ablation effect of each block matching ``blocks`` (default: the heads) on a slice."""
    activity = artifact.tables["activity"]
    rows = activity[(activity.slice == slice_name) & activity.block.str.fullmatch(blocks)]
    return dict(zip(rows.block, rows.ablation))


def held_out(checkpoint, config: IngestConfig, index: int, name: str) -> torch.Tensor:
    """The prompts the ingest measures a slice's effects (and its baseline) on."""
    spec = load_model(str(checkpoint.parent / NATIVE_CONFIG), str(checkpoint)).spec
    data = load_slice(name, spec, None, min(spec.n_ctx, 128), config.n_seq, config.seed + index)
    return effect_sample(data.split(config.holdout, config.seed)[1], config).tokens


def plain_effects(checkpoint, tokens: torch.Tensor, ablation: str, seed: int = 0) -> dict[str, float]:
    """Per head, the mean over ``tokens``' prompts of the next-token loss with the head's z replaced,
    minus the clean loss, in the model's own plain PyTorch forward on its unprocessed weights. z
    becomes its mean over the same prompts at each position (``position``) or over every token
    (``mean``), prompt ``perm[i]``'s z (``resample``, ``perm`` the seeded permutation of
    ingest/baselines.py), or ``zero``: zero in the processed model, whose value bias (the
    LayerNorm bias through W_V plus b_V, folded into b_O as TransformerLens does) is its own."""
    model = AttentionOnly.from_checkpoint(RECIPE, checkpoint)

    def loss(hooks) -> float:
        with torch.no_grad():
            logits = model(tokens, hooks)
        per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        return float(per_token.mean(1).mean())

    clean_z = {}

    def record(l):
        def hook(z):
            clean_z[l] = z
            return z

        return hook

    clean = loss({HOOK_Z.format(l): record(l) for l in range(RECIPE.n_layers)})
    permutation = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    effects = {}
    for l in range(RECIPE.n_layers):
        z, attn = clean_z[l], model.blocks[l].attn
        value_bias = (torch.einsum("d,hde->he", model.blocks[l].ln1.b, attn.W_V) + attn.b_V).detach()
        baseline = {
            "position": z.mean(0, keepdim=True),
            "mean": z.mean((0, 1), keepdim=True),
            "resample": z[permutation],
            "zero": value_bias[None, None],
        }[ablation]
        for h in range(RECIPE.n_heads):

            def ablate(z, h=h, baseline=baseline):
                z = z.clone()
                z[:, :, h] = baseline[:, :, h].expand_as(z[:, :, h])
                return z

            effects[f"L{l}H{h}"] = loss({HOOK_Z.format(l): ablate}) - clean
    return effects


def test_it_ingests_end_to_end_as_a_native_model(artifacts):
    _, found = artifacts
    artifact = found["position"]
    model, checkpoint = artifact.manifest["model"], artifact.manifest["checkpoint"]
    assert model["name"] == RECIPE.name and not model["d_mlp"]  # the config's model_name; no MLPs
    assert (checkpoint["label"], checkpoint["step"]) == ("step-03000", 3000)  # the weights file's stem
    heads = {f"L{l}H{h}" for l in range(RECIPE.n_layers) for h in range(RECIPE.n_heads)}
    for slice_name in SLICES:
        assert stored_effects(artifact, slice_name).keys() == heads
    assert not artifact.tables["activity"].block.str.contains("mlp").any()


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("index,slice_name", list(enumerate(SLICES)))
def test_stored_effects_are_plain_pytorch_ablations(artifacts, ablation, index, slice_name):
    final, found = artifacts
    expected = plain_effects(final, held_out(final, IngestConfig(), index, slice_name), ablation)
    stored = stored_effects(found[ablation], slice_name)
    for head, value in expected.items():
        assert stored[head] == pytest.approx(value, abs=1e-3), (ablation, slice_name, head)


def test_the_pooled_mean_charges_layer_0_for_positions(artifacts):
    """With learned positions, what a layer-0 head writes depends on where it sits; the pooled mean
    replaces it by every position's average. On repeated tokens the diffuse layer-0 head (a running
    average of the tokens before it) costs nothing under the per-position mean and a third of a nat
    under the pooled mean; the positional embedding cannot be ablated per position at all (its
    per-position mean is itself) and costs 1.7 nats pooled; and under either the previous-token head
    is layer 0's costliest."""
    final, found = artifacts
    found_roles = roles(final)
    position, pooled = (stored_effects(found[a], "repeated", blocks=r".*") for a in ("position", "mean"))
    for head in found_roles["diffuse"]:
        assert abs(position[head]) < 0.05 and pooled[head] > 0.2, (head, position[head], pooled[head])
    assert position["pos_embed"] == pytest.approx(0, abs=1e-6) and pooled["pos_embed"] > 1.0
    layer_0 = [f"L0H{h}" for h in range(RECIPE.n_heads)]
    for effects in (position, pooled):
        assert [max(layer_0, key=effects.get)] == found_roles["previous_token"], effects


def faithful_circuit(artifact, slice_name: str) -> tuple[set[str], dict]:
    """A slice's circuit by faithfulness: its members (activity.in_circuit) and manifest entry."""
    activity = artifact.tables["activity"]
    rows = activity[activity.slice == slice_name]
    entry = next(s for s in artifact.manifest["slices"] if s["name"] == slice_name)["circuit"]
    return set(rows.block[rows.in_circuit]), entry


def test_its_circuit_by_faithfulness_keeps_the_induction_heads_that_a_threshold_drops(artifacts):
    """On repeated and random tokens together, the induction heads share the work and random tokens
    halve it: each alone costs under 0.1 nats, so the circuit at the default threshold leaves every
    one out; the circuit by faithfulness keeps those it needs (three of the four). On random tokens
    alone the model is no better than chance (uniform tokens), so there is no behaviour for a circuit,
    and it says so."""
    final, found = artifacts
    artifact, union = found["position"], "+".join(SLICES)
    activity = artifact.tables["activity"]
    effects = dict(zip(activity.block[activity.slice == union], activity.ablation[activity.slice == union]))
    members, entry = faithful_circuit(artifact, union)
    induction = roles(final)["induction"]
    assert all(effects[head] < 0.1 for head in induction), effects
    assert len(set(induction) & members) >= 2, members
    assert entry["faithfulness"] >= entry["target"] == 0.9 and entry["size"] == len(members) < len(effects)
    empty, on_random = faithful_circuit(artifact, "random")
    assert not empty and on_random["faithfulness"] is None and "no better than chance" in on_random["reason"]


def test_the_circuit_by_faithfulness_is_what_plain_hooks_measure_and_needs_every_member(artifacts):
    """Hooks written in the test (every channel outside the set replaced by its mean over the
    held-out prompts at each position) give the stored faithfulness, and dropping any one member
    falls short of the target."""
    final, found = artifacts
    members, entry = faithful_circuit(found["position"], "repeated")
    model, tokens = native(final), held_out(final, IngestConfig(), 0, "repeated")
    assert plain_faithfulness(model, tokens, members) == pytest.approx(entry["faithfulness"], abs=1e-4)
    for member in members:
        assert plain_faithfulness(model, tokens, members - {member}) < entry["target"], member
