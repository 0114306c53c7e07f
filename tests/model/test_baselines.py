"""Ablation baselines (``--ablation``): each channel's stored effect is what a plain Hugging Face
ablation of that head gives, on the slice's held-out prompts, with the baseline measured on the
slice alone; the per-position and pooled means disagree on the reference model; and a slice's
effects do not change when another slice is ingested beside it."""

import json
from dataclasses import replace

import pytest
import torch
from builders import ingest_reference
from transformers import GPTNeoXForCausalLM

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest

# 48 prompts of 48 tokens a slice: 10 held out (480 tokens, under effect_tokens), all of them measured.
CONFIG = IngestConfig(n_seq=48, examples=0)


def held_out(checkpoint, config: IngestConfig, index: int, name: str) -> torch.Tensor:
    spec = load_model(str(checkpoint)).spec
    data = load_slice(name, spec, None, 48, config.n_seq, config.seed + index)
    return data.split(config.holdout, config.seed)[1].tokens


def plain_effects(checkpoint, tokens: torch.Tensor, ablation: str, corrupted=None) -> dict[str, float]:
    """Per head, the mean over ``tokens``' prompts of the next-token loss with that head's z (the
    attention output's input columns) replaced by its baseline over the same prompts (for
    ``counterfactual``: its z on each prompt's ``corrupted`` prompt), minus the clean loss: plain
    PyTorch hooks on the Hugging Face model."""
    model = GPTNeoXForCausalLM.from_pretrained(checkpoint).float().eval()
    layers, H = model.gpt_neox.layers, model.config.num_attention_heads
    d_head = model.config.hidden_size // H

    def loss(hooks=(), inputs=tokens):
        handles = [layers[l].attention.dense.register_forward_pre_hook(hook) for l, hook in hooks]
        try:
            with torch.no_grad():
                logits = model(input_ids=inputs).logits
        finally:
            for handle in handles:
                handle.remove()
        per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        return float(per_token.mean(1).mean())

    clean_z = {}

    def record(l):
        def hook(dense, inputs):
            clean_z[l] = inputs[0].detach()

        return hook

    if corrupted is not None:
        loss([(l, record(l)) for l in range(len(layers))], corrupted)
        patched_z = dict(clean_z)
    clean = loss([(l, record(l)) for l in range(len(layers))])
    effects = {}
    for l in range(len(layers)):
        z = clean_z[l]
        # zero: z without its constant part is zero, i.e. z is the value bias plus the LayerNorm bias
        # through W_V (the runner folds both into the output bias, as TransformerLens does by
        # default, so a zeroed head writes nothing of its own)
        qkv, beta = layers[l].attention.query_key_value, layers[l].input_layernorm.bias
        W_V = qkv.weight.detach().view(H, 3, d_head, -1)[:, 2]  # [H, d_head, d_model]
        value_bias = (W_V @ beta.detach() + qkv.bias.detach().view(H, 3, d_head)[:, 2]).reshape(1, 1, -1)
        if ablation == "position":
            baseline = z.mean(0, keepdim=True)
        elif ablation == "mean":
            baseline = z.mean((0, 1), keepdim=True)
        else:
            baseline = value_bias if ablation == "zero" else patched_z[l]
        for h in range(H):
            columns = slice(h * d_head, (h + 1) * d_head)

            def ablate(dense, inputs, columns=columns, baseline=baseline):
                z = inputs[0].clone()
                z[..., columns] = baseline[..., columns].expand_as(z[..., columns])
                return (z,)

            effects[f"L{l}H{h}"] = loss([(l, ablate)]) - clean
    return effects


@pytest.fixture(scope="module")
def effects_by_ablation(reference_checkpoints, tmp_path_factory):
    final = reference_checkpoints[-1]
    out = tmp_path_factory.mktemp("baselines")
    stored = {}
    for ablation in ("position", "mean", "zero"):
        activity = ingest_reference(final, out / ablation, replace(CONFIG, ablation=ablation)).tables["activity"]
        rows = activity[(activity.slice == "repeated") & activity.block.str.match(r"L\dH\d")]
        stored[ablation] = dict(zip(rows.block, rows.ablation))
    return final, stored


@pytest.mark.parametrize("ablation", ["position", "mean", "zero"])
def test_stored_effects_are_plain_pytorch_ablations(effects_by_ablation, ablation):
    final, stored = effects_by_ablation
    expected = plain_effects(final, held_out(final, CONFIG, 0, "repeated"), ablation)
    assert stored[ablation].keys() == expected.keys()
    for head, value in expected.items():
        assert stored[ablation][head] == pytest.approx(value, rel=1e-3, abs=1e-4), (ablation, head)


def test_per_position_and_pooled_means_disagree_on_the_reference_model(effects_by_ablation):
    _, stored = effects_by_ablation
    gaps = {head: abs(stored["position"][head] - stored["mean"][head]) for head in stored["mean"]}
    assert max(gaps.values()) > 0.05, gaps


def test_counterfactual_ablation_patches_each_prompt_from_its_own(reference_checkpoints, tmp_path):
    """A task slice of repeated sequences whose counterfactual prompts are random tokens (as ACDC
    corrupts induction): each head's stored effect is the loss with its z patched from the prompt's
    own counterfactual, position by position, as hooks written here give it."""
    final = reference_checkpoints[-1]
    generator = torch.Generator().manual_seed(5)
    prompts = torch.randint(0, 64, (40, 24), generator=generator).repeat(1, 2)
    corrupt = torch.randint(0, 64, (40, 48), generator=generator)
    rows = [{"tokens": p.tolist(), "counterfactual_tokens": c.tolist()} for p, c in zip(prompts, corrupt)]
    task = tmp_path / "copies.jsonl"
    task.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = replace(CONFIG, ablation="counterfactual")
    [path] = ingest(str(final), [], [str(task)], tmp_path / "out", config, progress=False, echo=lambda _: None)
    activity = read_artifact(path).tables["activity"]
    stored = dict(zip(activity.block, activity.ablation))
    held = load_slice(str(task), load_model(str(final)).spec, None, 48, 0, 0).split(config.holdout, config.seed)[1]
    expected = plain_effects(final, held.tokens, "counterfactual", held.corrupted)
    for head, value in expected.items():
        assert stored[head] == pytest.approx(value, rel=1e-3, abs=1e-4), head
    assert expected["L0H0"] > 1.0  # the previous-token head's keys, taken from random tokens, break the copy
    [entry] = read_artifact(path).manifest["slices"]
    assert entry["ablation"] == "counterfactual prompts of copies"


def test_a_slices_effects_do_not_change_with_the_slices_beside_it(reference_checkpoints, tmp_path):
    final = reference_checkpoints[-1]
    effects = []
    for data in (["repeated"], ["repeated", "random"]):
        [path] = ingest(str(final), [], data, tmp_path, CONFIG, progress=False, echo=lambda _: None)
        activity = read_artifact(path).tables["activity"]
        rows = activity[activity.slice == "repeated"]
        effects.append(dict(zip(rows.block, rows.ablation)))
    assert effects[0].keys() == effects[1].keys()
    for block, value in effects[0].items():
        assert effects[1][block] == pytest.approx(value, abs=1e-6), block
