"""Fingerprints across separately trained models: the same mechanism is found in other seeds and in a
wider model. Ground truth is each model's own attention on fresh probes (``head_scores.json``), not the
fingerprints' probes."""

import json

import pytest

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.channels import head_name
from circuit_atlas.ingest.fingerprints import TARGETS, attention_scores, chance_attention, lift, probe_tokens
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
    lifts = {t: scores[t].apply_(lambda v: lift(v, chance)) for t in TARGETS}
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
