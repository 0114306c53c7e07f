"""Fingerprints across separately trained models: the same mechanism is found in other seeds and in a
wider model. Ground truth is each model's own attention on fresh probes (``head_scores.json``), not the
fingerprints' probes."""

import json

import pytest
import torch
from builders import save_native

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.channels import head_name
from circuit_atlas.ingest.fingerprints import (
    TARGETS,
    attention_scores,
    chance_attention,
    lift,
    probe_tokens,
    windowed_head_scores,
)
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.seeds import PARTIAL_ATTENTION, final_checkpoints, matching_report, mechanisms


def test_each_variant_has_both_mechanisms():
    found = {name: set(mechanisms(path).values()) for name, path in final_checkpoints(default_reference_dir()).items()}
    assert len(found) == 3 and all(f == {"previous_token", "induction"} for f in found.values()), found


def test_fingerprints_match_each_mechanism_across_seeds_and_widths(variant_artifacts):
    finals = final_checkpoints(default_reference_dir())
    report = matching_report(
        {name: read_artifact(paths[-1]) for name, paths in variant_artifacts.items()},
        {name: mechanisms(path) for name, path in finals.items()},
        {name: mechanisms(path, PARTIAL_ATTENTION) for name, path in finals.items()},
    )
    assert len(report.matches) == 18  # 9 labelled heads, each against the 2 other models
    assert report.top1 >= 0.9, "\n".join(report.lines())
    assert all(report.separated.values()), report.separated


@pytest.mark.parametrize("step", [0, -1])
def test_lift_is_zero_at_chance_and_large_for_the_heads_mechanism(reference_checkpoints, step):
    """At initialisation every head attends at chance; at the end the previous-token and induction
    heads lift their target far above it and no other."""
    checkpoint = reference_checkpoints[step]
    model = load_model(str(checkpoint))
    probe = probe_tokens(model.spec.d_vocab, model.spec.n_ctx, seed=7)
    scores = attention_scores(model, probe)
    chance = chance_attention(probe.shape[1])
    lifts = {t: lift(scores[t], chance) for t in TARGETS}
    if step == 0:
        assert all(float(v.max()) < 0.1 for v in lifts.values()), lifts
        return
    truth = json.loads((checkpoint.parent / "head_scores.json").read_text())[checkpoint.name]
    found = mechanisms(checkpoint)
    heads = [(layer, head) for layer in range(model.spec.n_layers) for head in range(model.spec.n_heads)]
    assert set(found) <= {head_name(layer, head) for layer, head in heads}
    for layer, head in heads:
        name, mechanism = head_name(layer, head), found.get(head_name(layer, head))
        if mechanism is None:
            continue
        assert lifts[mechanism][layer, head] > 0.5, (name, mechanism, truth[mechanism])
        assert all(lifts[t][layer, head] < lifts[mechanism][layer, head] for t in TARGETS if t != mechanism)


def position_limited_model(folder) -> str:
    """One attention-only layer over one-hot positions: head 0 attends to the previous token only from
    queries at positions 9 to 25 (uniformly elsewhere), as a model trained on short sequences may;
    head 1 at every position."""
    n_ctx, d_vocab, scale = 64, 64, 200.0  # past the 1 / sqrt(d_head) scaling, one key takes it all
    config = {
        "n_layers": 1, "d_model": n_ctx + d_vocab, "n_ctx": n_ctx, "d_head": n_ctx, "n_heads": 2, "d_mlp": None,
        "act_fn": None, "d_vocab": d_vocab, "attn_only": True, "normalization_type": None,
    }  # fmt: skip
    d = config["d_model"]
    W_Q, W_K = torch.zeros(2, d, n_ctx), torch.zeros(2, d, n_ctx)
    for i in range(1, n_ctx):
        W_K[:, i - 1, i] = 1.0  # a key at position j points at j + 1
        W_Q[1, i, i] = scale
        if 9 <= i <= 25:
            W_Q[0, i, i] = scale
    state = {
        "embed.W_E": torch.cat([torch.zeros(d_vocab, n_ctx), torch.eye(d_vocab)], 1),
        "pos_embed.W_pos": torch.cat([torch.eye(n_ctx), torch.zeros(n_ctx, d_vocab)], 1),
        "blocks.0.attn.W_Q": W_Q, "blocks.0.attn.b_Q": torch.zeros(2, n_ctx),
        "blocks.0.attn.W_K": W_K, "blocks.0.attn.b_K": torch.zeros(2, n_ctx),
        "blocks.0.attn.W_V": torch.randn(2, d, n_ctx) * 0.1, "blocks.0.attn.b_V": torch.zeros(2, n_ctx),
        "blocks.0.attn.W_O": torch.randn(2, n_ctx, d) * 0.1, "blocks.0.attn.b_O": torch.zeros(d),
        "unembed.W_U": torch.randn(d, d_vocab) * 0.1, "unembed.b_U": torch.zeros(d_vocab),
    }  # fmt: skip
    config_path, weights_path = save_native(folder, config, state)
    return load_model(str(config_path), str(weights_path))


def test_a_head_that_works_at_early_positions_only_still_shows_its_mechanism(tmp_path):
    """The issue's model: a previous-token head on at positions 9-25 and off from 33 scored 0.016 on
    probes whose queries sat at 32-63 and matched another model's non-previous-token head. Over the
    probe windows it lifts the previous token as the head that works everywhere does, and nothing else."""
    model = position_limited_model(tmp_path)
    segment = probe_tokens(model.spec.d_vocab, model.spec.n_ctx).shape[1] // 2
    longest_only = lift(
        attention_scores(model, probe_tokens(model.spec.d_vocab, model.spec.n_ctx))["previous_token"],
        chance_attention(2 * segment),
    )
    assert float(longest_only[0, 0]) < 0.05 < 0.9 < float(longest_only[0, 1])  # the single window misses it
    lifts, scores = windowed_head_scores(model)
    for head in (0, 1):
        assert float(lifts["previous_token"][0, head]) > 0.8
        assert all(float(lifts[t][0, head]) < 0.2 for t in TARGETS if t != "previous_token")
    assert float(scores["previous_token"][0, 0]) > 0.8  # the stored score is the window's where it works
