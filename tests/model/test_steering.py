"""Interventions on stored write subspaces (ingest/steering.py, app/steering.py) on the attention-only
induction model, each figure checked against the same intervention written here as a plain PyTorch
hook on the model's own forward (reference/attention_only.py), not the catalog's runner.

The head's write in the catalog's processed model is ``(z_h - b_V[h]) W_O[h]`` centred over d_model
(LayerNorm removes the mean anyway); a patch or a projection depends on it only up to that constant,
so the plain hooks use the centred ``z_h W_O[h]``.
"""

import json

import pytest
import torch
from builders import ONE_TOKEN as TOKEN
from click.testing import CliRunner

from circuit_atlas.cli import cli
from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.runnable import Runnable
from circuit_atlas.ingest.steering import Intervention, resample_order
from circuit_atlas.reference.attention_only import (
    HOOK_ATTN_OUT,
    HOOK_KEY_INPUT,
    HOOK_Z,
    NATIVE_CONFIG,
    AttentionOnly,
    AttentionOnlyRecipe,
)
from circuit_atlas.steering import steer_artifact

RECIPE = AttentionOnlyRecipe()
SEED = 0


@pytest.fixture(scope="module")
def artifact(attention_only_artifact):
    return attention_only_artifact


@pytest.fixture(scope="module")
def plain(attention_only_checkpoints, artifact):
    """The plain model, the slices' tokens (rebuilt by the ingest's own settings) and the previous-token head."""
    from circuit_atlas.ingest.model_adapter import load_model
    from circuit_atlas.ingest.pipeline import load_slices

    manifest = read_artifact(artifact).manifest
    loaded = load_model(manifest["checkpoint"]["source"], manifest["checkpoint"]["revision"])
    slices = {s.name: s.tokens for s in load_slices(loaded, manifest["data"], IngestConfig(**manifest["config"]))}
    final = attention_only_checkpoints[-1]
    scores = json.loads((final.parent / "head_scores.json").read_text())[final.stem]["previous_token"][0]
    head = max(range(RECIPE.n_heads), key=lambda h: scores[h])
    return AttentionOnly.from_checkpoint(RECIPE, final), slices, head


def prompt_losses(model, tokens, hooks=None) -> torch.Tensor:
    """Each prompt's mean next-token loss."""
    with torch.no_grad():
        logits = model(tokens, hooks or {})
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return losses.mean(1).double()


def head_write(model, tokens, head) -> torch.Tensor:
    """The head's centred write ``[n, p, d_model]`` on ``tokens``."""
    captured = {}

    def keep(z):
        captured["z"] = z
        return z

    with torch.no_grad():
        model(tokens, {HOOK_Z.format(0): keep})
        write = captured["z"][:, :, head] @ model.blocks[0].attn.W_O[head]
    return write - write.mean(-1, keepdim=True)


def adding(delta: torch.Tensor):
    return {HOOK_ATTN_OUT.format(0): lambda out: out + delta}


def test_patching_the_previous_token_heads_write_from_random_tokens_costs_what_ablating_it_does(plain, artifact):
    """Its write-subspace state taken from random-token prompts raises the repeated loss by most of its
    mean-ablation cost (per-position mean, plain hook) and moves the random loss by less than twice its
    standard error; the figures are the plain patch's."""
    model, tokens, head = plain
    name = f"L0H{head}"
    effects = steer_artifact(artifact, [f"patch {name}/out from random"], seed=SEED).set_index("slice")
    basis = read_artifact(artifact).bases()[f"{name}/out"]
    repeated, random = tokens["repeated"], tokens["random"]
    clean = prompt_losses(model, repeated)

    def mean_z(z):
        z = z.clone()
        z[:, :, head] = z[:, :, head].mean(0)
        return z

    ablation = float((prompt_losses(model, repeated, {HOOK_Z.format(0): mean_z}) - clean).mean())
    source = head_write(model, random, head) @ basis
    order = resample_order(len(repeated), len(random), SEED)
    delta = (source[order] - head_write(model, repeated, head) @ basis) @ basis.T
    patched = float((prompt_losses(model, repeated, adding(delta)) - clean).mean())
    on_repeated = effects.loc["repeated"]
    assert on_repeated["loss_delta"] == pytest.approx(patched, abs=2e-3)
    assert on_repeated["loss_delta"] >= 0.8 * ablation > 0.5, (on_repeated["loss_delta"], ablation)
    on_random = effects.loc["random"]
    assert abs(on_random["loss_delta"]) < 2 * on_random["loss_se"], on_random


def test_projecting_out_what_the_stored_subspace_left_out_changes_nothing_measurable(plain, artifact):
    """The directions of the head's write space outside its stored subspace, projected out, move the
    repeated loss by less than twice its standard error (as the plain projection does), while projecting
    out the stored subspace costs most of the head's effect; batched with it, each measures what it does alone."""
    model, tokens, head = plain
    name = f"L0H{head}"
    basis = read_artifact(artifact).bases()[f"{name}/out"].double()
    W_O = model.blocks[0].attn.W_O[head].detach().double()
    space = torch.linalg.svd(W_O - W_O.mean(-1, keepdim=True), full_matrices=False)[2].T  # [d_model, d_head]
    left_u, values, _ = torch.linalg.svd(space - basis @ (basis.T @ space), full_matrices=False)
    outside = left_u[:, values > 0.5].float()
    assert 0 < outside.shape[1] <= RECIPE.d_head - basis.shape[1] and (outside.T @ basis.float()).abs().max() < 1e-4
    specs = [f"project {name}/out"]
    together = _steer_with_basis(artifact, name, outside, specs)
    alone = _steer_with_basis(artifact, name, outside, [])
    repeated = tokens["repeated"]
    write = head_write(model, repeated, head)
    plain_delta = float(
        (prompt_losses(model, repeated, adding(-(write @ outside) @ outside.T)) - prompt_losses(model, repeated)).mean()
    )
    outside_effect = together[("outside", "repeated")]
    assert outside_effect["loss_delta"] == pytest.approx(plain_delta, abs=2e-3)
    assert abs(outside_effect["loss_delta"]) < 2 * outside_effect["loss_se"], outside_effect
    assert together[(specs[0], "repeated")]["loss_delta"] > 1.0
    assert outside_effect["loss_delta"] == pytest.approx(alone[("outside", "repeated")]["loss_delta"], abs=1e-6)
    single = steer_artifact(artifact, specs, ["repeated"]).iloc[0]
    assert single["loss_delta"] == pytest.approx(together[(specs[0], "repeated")]["loss_delta"], abs=1e-6)


def test_projecting_an_induction_heads_key_read_out_of_its_keys_is_what_a_plain_key_hook_does(plain, artifact):
    """``project L1Hh/k``: the head's stored key read subspace removed from the normalised stream its
    keys read (that head's keys only), as a plain hook on the model's per-head key input does it
    (``x = x̂ w + b``, so the change of the normalised input enters as ``Δ ⊙ w``): the repeated loss
    rises by many standard errors and matches the plain figure."""
    model, tokens, _ = plain
    head = 0
    name = f"L1H{head}"
    effects = steer_artifact(artifact, [f"project {name}/k"], ["repeated"]).iloc[0]
    basis = read_artifact(artifact).bases()[f"{name}/k"]
    w, b = model.blocks[1].ln1.w.detach(), model.blocks[1].ln1.b.detach()

    def removing(x):  # [batch, pos, head, d_model]
        x = x.clone()
        normalised = (x[:, :, head] - b) / w
        x[:, :, head] += (-(normalised @ basis) @ basis.T) * w
        return x

    repeated = tokens["repeated"]
    plain_delta = prompt_losses(model, repeated, {HOOK_KEY_INPUT.format(1): removing}) - prompt_losses(model, repeated)
    assert effects["loss_delta"] == pytest.approx(float(plain_delta.mean()), abs=2e-3)
    assert effects["loss_delta"] > 10 * effects["loss_se"] > 0, effects


def test_pushing_each_write_direction_both_ways_is_what_a_plain_hook_does(plain, artifact):
    """What ``ingest --steer`` stores (``direction_steering``), on the previous-token head's write subspace
    and the first 8 prompts of each slice: every direction pushed up and down by 3 standard deviations of
    its coordinate gives the loss change, KL and share of changed top tokens of the same push written as
    a plain hook; and pushing its first direction hurts the repeated slice (its mechanism) and not the
    random one."""
    from circuit_atlas.ingest.data import DataSlice
    from circuit_atlas.ingest.model_adapter import load_model
    from circuit_atlas.ingest.steering import direction_steering

    model, tokens, head = plain
    opened = read_artifact(artifact)
    key = f"L0H{head}/out"
    basis = opened.bases()[key]
    checkpoint = opened.manifest["checkpoint"]
    loaded = load_model(checkpoint["source"], checkpoint["revision"])
    parts = [DataSlice.of_tokens(name, name, tokens[name]) for name in ("repeated", "random")]
    rows = direction_steering(loaded, {key: basis}, parts, 8 * tokens["random"].shape[1], 3.0)
    assert len(rows) == 2 * 2 * basis.shape[1]
    for row in rows:
        part = tokens[row["slice"]][:8]
        direction = basis[:, row["direction"]]
        delta = row["push"] * (head_write(model, part, head) @ direction).std() * direction
        with torch.no_grad():
            clean = model(part)[:, :-1].log_softmax(-1)
            pushed = model(part, adding(delta))[:, :-1].log_softmax(-1)
        change = prompt_losses(model, part, adding(delta)) - prompt_losses(model, part)
        assert row["loss_delta"] == pytest.approx(float(change.mean()), abs=2e-3), row
        assert row["loss_se"] == pytest.approx(float(change.std() / 8**0.5), abs=2e-3), row
        assert row["kl"] == pytest.approx(float((clean.exp() * (clean - pushed)).sum(-1).mean()), abs=2e-3), row
        assert row["flipped"] == pytest.approx(float((clean.argmax(-1) != pushed.argmax(-1)).float().mean()), abs=0.01)
    first = {(r["slice"], r["push"]): r["loss_delta"] for r in rows if r["direction"] == 0}
    hurt = min(first["repeated", 3.0], first["repeated", -3.0])
    assert hurt > 0.5 and max(abs(first["random", 3.0]), abs(first["random", -3.0])) < 0.1 * hurt, first


def _steer_with_basis(artifact, name, basis, specs) -> dict:
    """Effects keyed by (spec, slice) of ``specs`` and of projecting out ``basis`` (spec ``outside``)
    on the artifact's slices (the API's explicit-basis intervention)."""
    from circuit_atlas.ingest.steering import steer
    from circuit_atlas.steering import Steering

    opened = Steering(artifact)
    interventions = [*opened.parse(specs), Intervention("outside", "project", name, basis=basis)]
    effects = steer(opened.model, opened.bases, interventions, list(opened.slices.values()), opened.slices)
    return {(e.spec, e.slice): vars(e) for e in effects}


@pytest.mark.parametrize(
    "spec,message",
    [
        ("L0H9/out[0] += 1", "no channel 'L0H9'; the channels are embed, pos_embed, L0H0"),
        ("L0H1/in[0] += 1", "L0H1 has no subspace 'in'; its subspaces are L0H1/q, L0H1/k, L0H1/v, L0H1/out"),
        ("ablate unembed", "no channel 'unembed' to ablate; the writers are embed"),
        ("L0H1/out[99] += 1", "99 is past it"),
        ("patch L0H1/out from nowhere", "no slice 'nowhere'; the slices are repeated, random"),
        ("L0H1 += 1", "Cannot read the intervention"),
    ],
)
def test_a_bad_spec_is_one_line_naming_what_exists(artifact, spec, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        steer_artifact(artifact, [spec])
    result = CliRunner().invoke(cli, ["steer", str(artifact), "--intervene", spec])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_the_command_prints_each_slice_and_intervention(artifact):
    result = CliRunner().invoke(
        cli,
        ["steer", str(artifact), "--intervene", "L0H1/out[0] += 2", "--intervene", "ablate L1H0", "--data", "repeated"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "slice repeated:" and len(lines) == 3
    assert lines[1].startswith("  L0H1/out[0] += 2: loss ") and "KL" in lines[1] and "promotes" in lines[1]
    assert lines[2].startswith("  ablate L1H0: loss +")


def test_steering_a_write_that_is_one_tokens_unembedding_makes_that_token_the_prediction(one_token_writer):
    """The head's stored write subspace is that token's unembedding direction, and the ingest stores the
    token as the direction's first promoted token (first suppressed when the basis points the other
    way); pushed along it (raw units, on the direction's side) the token's probability rises by nearly
    1 on average, so it is the prediction nearly everywhere, and it is the top promoted token."""
    artifact, direction = one_token_writer
    opened = read_artifact(artifact)
    basis = opened.bases()["L0H0/out"]
    assert basis.shape[1] == 1 and abs(float(basis[:, 0] @ direction)) > 0.999
    sign = 1.0 if float(basis[:, 0] @ direction) > 0 else -1.0
    subspaces = opened.tables["subspaces"].set_index(["block", "role"])
    stored = subspaces.loc[("L0H0", "out"), "promoted_tokens" if sign > 0 else "suppressed_tokens"]
    assert stored[0] == TOKEN and len(stored) == 5
    assert len(subspaces.loc[("L0H0", "q"), "promoted_tokens"]) == 0
    effect = steer_artifact(artifact, [f"L0H0/out[0] += {sign * 20} raw"]).iloc[0]
    token, _, rise = effect["promoted"][0]
    assert token == TOKEN and rise > 0.9, effect["promoted"]
    assert effect["suppressed"][0][2] < 0


def _continuations(artifact, specs, prompt, n_tokens, seed=0):
    """The API's continuations on the artifact's first slice (token ids, no tokenizer needed)."""
    from circuit_atlas.ingest.steering import continuations
    from circuit_atlas.steering import Steering

    opened = Steering(artifact)
    first = next(iter(opened.slices.values()))
    return continuations(
        opened.model, opened.bases, opened.parse(specs), prompt, n_tokens, first, opened.slices, seed=seed
    )


def test_continuations_are_seeded_and_the_clean_one_is_what_the_runnable_samples(artifact):
    from circuit_atlas.ingest.runnable import Runnable

    prompt = torch.tensor([5, 9, 13, 2, 5, 9])
    clean, patched = _continuations(artifact, ["patch L0H3/out from random"], prompt, 8, seed=3)
    assert torch.equal(clean, Runnable.from_artifact(artifact).generate(prompt, 8, seed=3))
    again = _continuations(artifact, ["patch L0H3/out from random"], prompt, 8, seed=3)
    assert torch.equal(again[0], clean) and torch.equal(again[1], patched) and torch.equal(patched[:6], prompt)


def test_steering_the_one_token_writer_makes_its_token_the_continuation(one_token_writer):
    artifact, direction = one_token_writer
    basis = read_artifact(artifact).bases()["L0H0/out"]
    sign = 1.0 if float(basis[:, 0] @ direction) > 0 else -1.0
    prompt = torch.tensor([1, 2, 3])
    clean, steered = _continuations(artifact, [f"L0H0/out[0] += {sign * 20} raw"], prompt, 8)
    assert int((steered[3:] == TOKEN).sum()) >= 7 > int((clean[3:] == TOKEN).sum())


def test_the_command_continues_a_text_prompt_clean_and_under_each_intervention(tmp_path):
    """A byte-level text model (the standard-library recipe, shrunk and trained 4 steps here):
    --generate prints the clean continuation and each intervention's, seeded, as text."""
    from dataclasses import replace

    from circuit_atlas.reference.stdlib_text import HELDOUT_FILE, StdlibTextRecipe, train_stdlib_text

    library = tmp_path / "lib"
    library.mkdir()
    (library / "a.py").write_text('"""A module."""\n\ndef f(x):\n    return x + 1\n' * 20)
    (library / "b.py").write_text("def g(y):\n    return y * 2\n" * 20)
    tiny = replace(
        StdlibTextRecipe(), holdout_every=2, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seq_len=16,
        batch_size=4, steps=4, warmup=1, checkpoint_every=4,
    )  # fmt: skip
    final = train_stdlib_text(tiny, tmp_path / "models", progress=False, echo=lambda _: None, root=library)[-1]
    (path,) = ingest(
        str(final), [str(final)], [f"heldout={final.parent / HELDOUT_FILE}"], tmp_path / "artifacts",
        IngestConfig(), "cpu", progress=False, echo=lambda _: None,
    )  # fmt: skip
    args = ["steer", str(path), "--intervene", "L0.mlp/out[0] += 5", "--generate", "def ", "--tokens", "6"]
    first, second = CliRunner().invoke(cli, args), CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert "continuations of 'def ' (6 tokens, seed 0):" in lines
    assert any(line.startswith("  clean: '") for line in lines)
    assert any(line.startswith("  L0.mlp/out[0] += 5: '") for line in lines)
    assert first.output == second.output


def test_ingest_with_steer_measures_every_write_direction_both_ways_and_without_it_none(one_token_writer, artifact):
    """``--steer``: one row per write direction of every writer, pushed up and down, on every slice, each
    figure in its range; the reference artifact, ingested without it, has an empty table."""
    opened = read_artifact(one_token_writer[0])
    steering = opened.tables["steering"]
    expected = {
        (key[:-4], i, push)
        for key, basis in opened.bases().items()
        if key.endswith("/out")
        for i in range(basis.shape[1])
        for push in (3.0, -3.0)
    }
    assert len(steering) == len(expected) > 2
    assert set(zip(steering["block"], steering["direction"], steering["push"])) == expected
    assert set(steering["slice"]) == {"random"} and opened.manifest["config"]["steer"] == 128
    assert steering["flipped"].between(0, 1).all() and (steering["loss_se"] > 0).all() and (steering["kl"] >= 0).all()
    assert len(read_artifact(artifact).tables["steering"]) == 0


def test_a_discovered_situation_is_a_patch_source_and_a_slice_to_measure_on(attention_only_checkpoints, tmp_path):
    """Ingested with --situations, the model's two situations are its repeated and its random prompts
    (each whole, in order); steering rebuilds them from the manifest, so patching the previous-token
    head from the random situation, and ablating it on the repeated one, give what the same
    interventions give with the named slices."""
    from circuit_atlas.steering import Steering

    final = attention_only_checkpoints[-1]
    config = IngestConfig(n_seq=64, situations=4)
    (path,) = ingest(
        str(final.parent / NATIVE_CONFIG),
        [str(final)],
        ["repeated", "random"],
        tmp_path,
        config,
        "cpu",
        False,
        echo=lambda _: None,
    )
    opened = Steering(path)
    situations = {
        e["name"]: {n for n, _ in e["prompts"]} for e in read_artifact(path).manifest["slices"] if e.get("discovered")
    }
    assert situations == {"situation-1": {"repeated"}, "situation-2": {"random"}}
    assert torch.equal(opened.slices["situation-2"].tokens, opened.slices["random"].tokens)
    effects = opened.effects(
        ["patch L0H3/out from situation-2", "patch L0H3/out from random", "ablate L0H3"], ["repeated", "situation-1"]
    ).set_index(["slice", "spec"])
    situation, named = (
        effects.loc[("repeated", "patch L0H3/out from situation-2")],
        effects.loc[("repeated", "patch L0H3/out from random")],
    )
    assert situation["loss_delta"] == pytest.approx(named["loss_delta"], abs=1e-9) and named["loss_delta"] > 1.0
    on_situation, on_slice = effects.loc[("situation-1", "ablate L0H3")], effects.loc[("repeated", "ablate L0H3")]
    assert on_situation["loss_delta"] == pytest.approx(on_slice["loss_delta"], abs=1e-9)
    with pytest.raises(UserError, match=r"'situation-1' is a situation discovered at ingest.*--data situation-1"):
        Runnable.from_artifact(path, circuit="situation-1")  # a runnable has the named slices only
