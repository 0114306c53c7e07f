"""Discovered situations: on data mixed from known slices, the clusters are those slices, and each
situation's circuit is the circuit of the slice it recovers."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from builders import ingest_reference
from sklearn.metrics import adjusted_rand_score

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import DataSlice, load_slice, synthetic_tokens
from circuit_atlas.ingest.fidelity import variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.situations import Discovery, Usage, discover, exact_usage, joined, recorded_situation
from circuit_atlas.ingest.statistics import accumulate_moments

MIN_EFFECT = 0.2  # nats: the circuit of a slice, as in the faithfulness tests
SLICES = ["repeated", "random"]  # as ingest_reference gives them


def discovered_on_reference(checkpoint, n: int, unit: str, max_situations: int) -> tuple[Usage, Discovery]:
    """Discovery's usage and situations on ``n`` repeated and ``n`` random sequences of 48 tokens."""
    model = load_model(str(checkpoint))
    slices = [
        DataSlice.of_tokens(kind, kind, synthetic_tokens(kind, model.spec.d_vocab, n, 48, seed))
        for seed, kind in enumerate(("repeated", "random"))
    ]
    moments = accumulate_moments(model, slices, progress=False)
    interventions = Interventions(model, Compression(decompose(moments, model.weights), 0.99, None, 1e-3), {})
    usage = exact_usage(interventions, slices, unit, 10**6, "position", 4096, seed=0, progress=False)
    return usage, discover(usage, [c.name for c in interventions.layout.channels], max_situations, seed=0)


def test_situations_of_repeated_and_random_sequences_are_those_slices(reference_checkpoints):
    _, found = discovered_on_reference(reference_checkpoints[-1], 96, "prompt", max_situations=6)
    labels = np.full(192, -1)
    for label, situation in enumerate(found.situations):
        for name, index in situation.origin:
            labels[index + (96 if name == "random" else 0)] = label
    truth = np.repeat([0, 1], 96)
    assert (labels >= 0).all() and len(found.situations) >= 2
    assert adjusted_rand_score(truth, labels) >= 0.9, (found.silhouette, [s.description for s in found.situations])
    assert all(s.discovered and "prompts" in s.description for s in found.situations)


def test_token_situations_of_repeated_sequences_are_the_copied_half(reference_checkpoints):
    """Per token, the positions where the induction circuit acts (the second, copied half of a
    repeated sequence) are one situation and every other position the other; the copied half's
    situation is scored at its own positions only, each against the next token."""
    usage, found = discovered_on_reference(reference_checkpoints[-1], 32, "token", max_situations=4)
    # Position q predicts token q + 1; from q = 23 on, a repeated sequence's next token is a copy.
    copied = (usage.sources[usage.prompt] == "repeated") & (usage.position >= 23)
    labels = np.full(len(copied), -1)
    for label, situation in enumerate(found.situations):
        for row, (name, index) in enumerate(situation.origin):
            prompt = index + (32 if name == "random" else 0)
            for q in situation.positions[row][situation.positions[row] >= 0].tolist():
                labels[(usage.prompt == prompt) & (usage.position == q)] = label
    assert len(found.situations) == 2 and (labels >= 0).all()
    assert adjusted_rand_score(copied, labels) >= 0.9, [s.description for s in found.situations]
    situation = next(s for s in found.situations if "repeated" in s.description and s.metric == "answer_loss")
    row, q = 0, int(situation.positions[0, 0])
    assert situation.answers[row, 0] == situation.tokens[row, q + 1]
    assert situation.scored.startswith("discovered positions")


def test_an_ingest_scores_each_situation_like_the_slice_it_recovers(reference_checkpoints, tmp_path):
    artifact = ingest_reference(reference_checkpoints[-1], tmp_path, IngestConfig(n_seq=64, situations=4, examples=2))
    discovered = [s for s in artifact.manifest["slices"] if s.get("discovered")]
    assert len(discovered) >= 2
    activity = artifact.tables["activity"]

    def circuit(name: str) -> list[str]:
        rows = activity[(activity["slice"] == name) & (activity["ablation"] >= MIN_EFFECT)]
        return rows.sort_values("effect_rank")["block"].tolist()

    repeated = circuit("repeated")
    assert {"L1H0", "L1H1"} <= set(repeated)
    matches = [s["name"] for s in discovered if set(circuit(s["name"])) == set(repeated)]  # ranks may swap
    assert matches, {s["name"]: (circuit(s["name"]), s["description"]) for s in discovered}
    assert set(artifact.tables["examples"]["slice"]) == {"repeated", "random", *(s["name"] for s in discovered)}
    curves = activity.groupby("slice")["faithfulness"]
    for entry in artifact.manifest["slices"]:  # a curve wherever there is behaviour to keep, else its reason
        measured = entry["circuit"]["reason"] is None
        assert (
            curves.get_group(entry["name"]).notna().all() if measured else curves.get_group(entry["name"]).isna().all()
        )


def test_slices_of_different_metrics_are_not_joined():
    tokens = torch.zeros(2, 4, dtype=torch.long)
    one = DataSlice.of_tokens("a", "a", tokens)
    other = DataSlice(
        "b",
        "b",
        tokens,
        torch.ones_like(tokens, dtype=torch.bool),
        "logit_diff",
        tokens[:, :1],
        tokens[:, :1],
        tokens[:, :1],
    )
    with pytest.raises(UserError, match="one metric"):
        joined([one, other])


@pytest.mark.parametrize("unit", ["prompt", "token"])
def test_a_situations_prompts_are_recorded_and_scored_as_the_same_prompts_given_as_a_slice(
    reference_checkpoints, tmp_path, unit
):
    """The manifest names each situation's prompts (slice, index), and a token situation each one's
    positions; given as a named slice of their own, in that order (a token situation's as a task
    slice scoring the next token at those positions), they get the situation's effects: its
    held-out prompts are its own."""
    config = IngestConfig(n_seq=64, situations=4, examples=0, situation_unit=unit)
    final = reference_checkpoints[-1]
    artifact = ingest_reference(final, tmp_path / "a", config)
    [situation, *_] = [s for s in artifact.manifest["slices"] if s.get("discovered")]
    spec = load_model(str(final)).spec
    named = {name: load_slice(name, spec, None, 48, config.n_seq, config.seed + i) for i, name in enumerate(SLICES)}
    assert len(situation["prompts"]) == situation["n_sequences"] >= 2
    tokens = torch.stack([named[name].tokens[i] for name, i in situation["prompts"]])
    if unit == "prompt":
        assert "positions" not in situation
        np.save(tmp_path / "same.npy", tokens.numpy())
        same = [f"same={tmp_path / 'same.npy'}"]
    else:
        assert len(situation["positions"]) == len(situation["prompts"]) and all(situation["positions"])
        rows = [
            {"tokens": t.tolist(), "position": qs, "answer": [int(t[q + 1]) for q in qs], "metric": "answer_loss"}
            for t, qs in zip(tokens, situation["positions"])
        ]
        (tmp_path / "same.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        same = [f"same={tmp_path / 'same.jsonl'}"]
    rebuilt = recorded_situation(situation, named)  # what steering measures on and patches from
    assert rebuilt.name == situation["name"] and torch.equal(rebuilt.tokens, tokens)
    if unit == "token":
        assert rebuilt.metric == "answer_loss"
        for r, row in enumerate(rows):
            assert rebuilt.positions[r][rebuilt.positions[r] >= 0].tolist() == row["position"]
            assert rebuilt.answers[r][rebuilt.answers[r] >= 0].tolist() == row["answer"]
    again = replace(config, situations=0)
    [path] = ingest(str(final), [], same, tmp_path / "b", again, progress=False, echo=lambda _: None)
    activity = artifact.tables["activity"]
    found = activity[activity.slice == situation["name"]].set_index("block")["ablation"]
    given = read_artifact(path).tables["activity"]
    given = given[given.slice == "same"].set_index("block")["ablation"]
    pd.testing.assert_series_equal(found.sort_index(), given.sort_index(), check_names=False, atol=1e-6)


def planted_usage(sizes: dict[str, int], seed: int = 0) -> Usage:
    """Slices of random tokens whose per-prompt exact effects [prompts, 4 channels] are planted: each
    slice's prompts are helped (a positive effect, nats) by one channel of their own, plus a little
    noise; a slice named ``lone`` holds one prompt helped by the last channel."""
    generator = torch.Generator().manual_seed(seed)
    slices, effects = [], []
    for channel, (name, n) in enumerate(sizes.items()):
        tokens = torch.randint(0, 32, (n, 8), generator=generator)
        slices.append(replace(DataSlice.of_tokens(name, name, tokens), origin=tuple((name, i) for i in range(n))))
        planted = 0.01 * torch.randn(n, 4, generator=generator)
        planted[:, 3 if name == "lone" else channel] += 1.0
        effects.append(planted)
    n = sum(sizes.values())
    sources = np.repeat(list(sizes), list(sizes.values()))
    return Usage(joined(slices), torch.cat(effects).numpy(), np.arange(n), np.full(n, -1), sources)


CHANNELS = ["c0", "c1", "c2", "c3"]


def test_situations_come_largest_first_without_one_prompt_ones_with_their_provenance_and_what_sets_them_apart():
    """Planted clusters of 30 (from slice a), 12 (from b) and 1 prompt: two situations, the larger
    first, the one-prompt cluster left out (a slice needs a fitting and a held-out prompt); each
    records its prompts as (slice, index) in slice order, and its description names first the
    channel that sets it apart, with its mean effect inside and outside."""
    usage = planted_usage({"a": 30, "b": 12, "lone": 1})
    found = discover(usage, CHANNELS, max_situations=4, seed=0)
    assert found.silhouette > 0.9 and [s.name for s in found.situations] == ["situation-1", "situation-2"]
    assert [s.n_sequences for s in found.situations] == [30, 12]
    assert [list(s.origin) for s in found.situations] == [[("a", i) for i in range(30)], [("b", i) for i in range(12)]]
    for situation, helper, rest in zip(found.situations, ("c0", "c1"), (12 + 1, 30 + 1)):
        assert situation.discovered
        apart = situation.description.split("channels that set it apart (mean effect, nats): ")[1]
        # The helper's mean effect is 1.00 inside; outside, the other prompts' noise around 0.
        assert apart.startswith(f"{helper} +1.00 (rest "), situation.description
        assert rest == 43 - situation.n_sequences
    assert torch.equal(found.situations[0].tokens, usage.data.tokens[:30])


def test_flat_usage_is_reported_and_gives_no_situations():
    """Every exact effect under MIN_USE (a saturated model): no clustering of noise, and a reason."""
    usage = planted_usage({"a": 20, "b": 20})
    flat = replace(usage, effects=usage.effects * 1e-3)
    found = discover(flat, CHANNELS, max_situations=4, seed=0)
    assert found.situations == [] and found.flat and "usage is flat" in found.reason
    assert not discover(usage, CHANNELS, max_situations=4, seed=0).flat


def test_prompts_that_use_the_channels_alike_are_one_situation():
    """Every prompt helped by the same channel by about the same amount (noise of 0.05 nats): one
    situation, and none is returned."""
    usage = planted_usage({"a": 20, "b": 20})
    generator = np.random.default_rng(0)
    alike = np.array([1.0, 0.5, 0.0, 0.0]) + 0.05 * generator.standard_normal((40, 4))
    found = discover(replace(usage, effects=alike), CHANNELS, max_situations=4, seed=0)
    assert found.situations == [] and "silhouette" in found.reason, found.silhouette


def test_per_position_losses_average_to_each_prompts_metric(reference_checkpoints):
    """Per position, the variants' losses are NaN exactly where a prompt has no scored position (its
    padding), and their mean over the scored ones is the prompt's metric, variant by variant."""
    model = load_model(str(reference_checkpoints[-1]))
    data = DataSlice.of_tokens("random", "random", synthetic_tokens("random", model.spec.d_vocab, 6, 16, 0))
    mask = data.mask.clone()
    mask[:3, 10:] = False  # three prompts of 10 tokens, right-padded
    data = replace(data, mask=mask, tokens=data.tokens.masked_fill(~mask, 0))
    moments = accumulate_moments(model, [data], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.99, None, 1e-3)
    interventions = Interventions(model, compression, {"random": Baseline.measure(model, data, "position")})
    variants = [Variant(), *(Variant.ablating(c) for c in interventions.layout.channels[:3])]
    prompts = variant_losses(interventions, variants, data, 64)
    positions = variant_losses(interventions, variants, data, 64, per_position=True)
    assert positions.shape == (4, 6, 15)
    assert torch.equal(positions[0].isnan(), ~mask[:, 1:])  # position q scores token q + 1
    torch.testing.assert_close(positions.nanmean(-1), prompts, rtol=1e-6, atol=1e-5)  # float32 sums
