"""Discovered situations: on data mixed from known slices, the clusters are those slices, and each
situation's circuit is the circuit of the slice it recovers."""

import numpy as np
import pandas as pd
import pytest
import torch
from builders import ingest_reference
from sklearn.metrics import adjusted_rand_score

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.attribution import slice_scores
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import DataSlice, load_slice, synthetic_tokens
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.situations import discover, joined
from circuit_atlas.ingest.statistics import accumulate_moments

MIN_EFFECT = 0.2  # nats: the circuit of a slice, as in the faithfulness tests
SLICES = ["repeated", "random"]  # as ingest_reference gives them


def test_situations_of_repeated_and_random_sequences_are_those_slices(reference_checkpoints):
    model = load_model(str(reference_checkpoints[-1]))
    layout = ChannelLayout(model.spec)
    slices = [
        DataSlice.of_tokens(kind, kind, synthetic_tokens(kind, model.spec.d_vocab, 96, 48, seed))
        for seed, kind in enumerate(("repeated", "random"))
    ]
    moments = accumulate_moments(model, slices, progress=False)
    compression = Compression(decompose(moments, model.weights), 0.99, None, 1e-3)
    effects = [
        slice_scores(model, compression, moments, layout, s, progress=False, edges=False).sequence_effects
        for s in slices
    ]
    names = [c.name for c in (*layout.writers, layout.unembed)]
    situations, silhouette = discover(slices, effects, names, max_situations=6, seed=0)
    # Which situation holds each prompt (the prompts are distinct random sequences).
    row = {tuple(t.tolist()): i for i, t in enumerate(joined(slices).tokens)}
    found = np.full(len(row), -1)
    for label, situation in enumerate(situations):
        for tokens in situation.tokens:
            found[row[tuple(tokens.tolist())]] = label
    truth = np.repeat([0, 1], 96)
    assert (found >= 0).all() and len(situations) >= 2
    assert adjusted_rand_score(truth, found) >= 0.9, (silhouette, [s.description for s in situations])
    assert all(s.discovered and "prompts" in s.description for s in situations)


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
    assert activity.groupby("slice")["faithfulness"].last().notna().all()


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


def test_a_situations_prompts_are_recorded_and_scored_as_the_same_prompts_given_as_a_slice(
    reference_checkpoints, tmp_path
):
    """The manifest names each situation's prompts (slice, index); given as a named slice of their
    own, in that order, they get the situation's effects: its held-out prompts are its own."""
    config = IngestConfig(n_seq=64, situations=4, examples=0)
    final = reference_checkpoints[-1]
    artifact = ingest_reference(final, tmp_path / "a", config)
    [situation, *_] = [s for s in artifact.manifest["slices"] if s.get("discovered")]
    spec = load_model(str(final)).spec
    named = {name: load_slice(name, spec, None, 48, config.n_seq, config.seed + i) for i, name in enumerate(SLICES)}
    assert len(situation["prompts"]) == situation["n_sequences"] >= 2
    tokens = torch.stack([named[name].tokens[i] for name, i in situation["prompts"]])
    np.save(tmp_path / "same.npy", tokens.numpy())
    same = [f"same={tmp_path / 'same.npy'}"]
    [path] = ingest(str(final), [], same, tmp_path / "b", config, progress=False, echo=lambda _: None)
    activity = artifact.tables["activity"]
    found = activity[activity.slice == situation["name"]].set_index("block")["ablation"]
    given = read_artifact(path).tables["activity"]
    given = given[given.slice == "same"].set_index("block")["ablation"]
    pd.testing.assert_series_equal(found.sort_index(), given.sort_index(), check_names=False, atol=1e-6)


def planted_effects(sizes: dict[str, int], seed: int = 0) -> tuple[list[DataSlice], list[torch.Tensor]]:
    """Slices of random tokens whose per-prompt effects [prompts, 4 channels] are planted: each slice's
    prompts are helped (negative effect) by one channel of their own, plus a little noise; a slice
    named ``lone`` holds one prompt helped by the last channel."""
    generator = torch.Generator().manual_seed(seed)
    slices, effects = [], []
    for channel, (name, n) in enumerate(sizes.items()):
        tokens = torch.randint(0, 32, (n, 8), generator=generator)
        slices.append(DataSlice.of_tokens(name, name, tokens))
        planted = 0.01 * torch.randn(n, 4, generator=generator)
        planted[:, 3 if name == "lone" else channel] -= 1.0
        effects.append(planted)
    return slices, effects


def test_situations_come_largest_first_without_one_prompt_ones_with_their_provenance_and_helpers():
    """Planted clusters of 30 (from slice a), 12 (from b) and 1 prompt: two situations, the larger
    first, the one-prompt cluster left out (a slice needs a fitting and a held-out prompt); each
    records its prompts as (slice, index) in slice order, and its description names the channel that
    helps it most first."""
    slices, effects = planted_effects({"a": 30, "b": 12, "lone": 1})
    channels = ["c0", "c1", "c2", "c3"]
    situations, silhouette = discover(slices, effects, channels, max_situations=4, seed=0)
    assert silhouette > 0.9 and [s.name for s in situations] == ["situation-1", "situation-2"]
    assert [s.n_sequences for s in situations] == [30, 12]
    assert [list(s.origin) for s in situations] == [[("a", i) for i in range(30)], [("b", i) for i in range(12)]]
    for situation, helper in zip(situations, ("c0", "c1")):
        assert situation.discovered
        assert situation.description.split("channels that help most: ")[1].startswith(f"{helper} -1.00"), (
            situation.description
        )
        assert torch.equal(situation.tokens, slices[0 if helper == "c0" else 1].tokens)


def test_prompts_that_use_the_channels_alike_are_one_situation_whatever_their_size():
    """Effects of one direction at sizes from 0.5 to 2 nats: the usage (each prompt's effects at unit
    norm) is one point, so there is one situation and none is returned."""
    slices, _ = planted_effects({"a": 20, "b": 20})
    direction = torch.tensor([-1.0, -0.5, 0.2, 0.0])
    scales = torch.linspace(0.5, 2.0, 40)[:, None]
    effects = [scales[:20] * direction, scales[20:] * direction]
    situations, silhouette = discover(slices, effects, ["c0", "c1", "c2", "c3"], max_situations=4, seed=0)
    assert situations == [], silhouette
