"""Lineages (ingest/matching.py): a channel continues its lineage only while it stays directly similar
to the lineage's start, so a subspace that drifts by steps that each pass the threshold starts a new
lineage where the drift from the start does not; and similarity is counted beyond chance, so large
random subspaces are not similar."""

import math

import pytest
import torch

from circuit_atlas.ingest.channels import Channel
from circuit_atlas.ingest.matching import following, matches, series_place, subspace_similarity

MLP = Channel("mlp", 0, None, "L0.mlp", 1, 0)


def turned(degrees: float) -> dict[str, torch.Tensor]:
    """The MLP's in and out subspaces: one direction in the plane of the first two axes, at ``degrees``."""
    angle = math.radians(degrees)
    basis = torch.tensor([[math.cos(angle)], [math.sin(angle)], [0.0]])
    return {"L0.mlp/in": basis, "L0.mlp/out": basis}


def beyond_chance(cos2: float) -> float:
    """The similarity of two lines in 3 dimensions at squared cosine ``cos2`` (chance: 1/3)."""
    return max(0.0, (cos2 - 1 / 3) / (1 - 1 / 3))


def test_a_drift_in_steps_that_each_match_starts_a_new_lineage_where_the_start_is_left_behind():
    """Steps of 20 degrees: cos^2 = 0.88 between neighbours (0.82 beyond chance), so every link is a
    MATCHES at 0.8; the direct similarity to the start falls to cos^2(40) = 0.59 (0.38) at the third
    checkpoint, where a new lineage starts, and to cos^2(60) = 0.25 from the first at the fourth, less
    than chance (0)."""
    previous, starts, last = None, [], turned(60)
    for step, degrees in enumerate((0, 20, 40, 60)):
        bases, label = turned(degrees), f"step-{step}"
        linked = matches([MLP], bases, {"L0.mlp": [0.0]}, previous, 0.8)
        assert len(linked) == (step > 0)  # every neighbour matches
        place = series_place([MLP], label, bases, previous, None if degrees == 60 else last, 0.8)
        starts.append(place.lineage["L0.mlp"])
        previous = following(label, bases, {"L0.mlp": [0.0]}, previous, place.lineage)
    close = beyond_chance(math.cos(math.radians(20)) ** 2)
    assert [start for start, _ in starts] == ["step-0", "step-0", "step-2", "step-2"]
    assert [round(similarity, 6) for _, similarity in starts] == [1.0, round(close, 6), 1.0, round(close, 6)]
    assert place.to_first["L0.mlp/in"] == 0.0
    assert place.to_last["L0.mlp/out"] == 1.0


def test_the_first_checkpoint_of_a_series_starts_every_lineage_and_is_its_own_first():
    place = series_place([MLP], "step-0", turned(0), None, turned(90), 0.8)
    assert place.lineage == {"L0.mlp": ("step-0", 1.0)}
    assert place.to_first == {"L0.mlp/in": 1.0, "L0.mlp/out": 1.0}
    assert place.to_last["L0.mlp/in"] < 1e-12


def test_similarity_counts_only_what_random_subspaces_do_not_share():
    """Random subspaces of 47 and 21 of 64 dimensions overlap by 47/64 by chance: beyond it, about 0;
    a subspace inside a larger one is 1; the whole space is similar only to itself."""
    generator = torch.Generator().manual_seed(0)

    def random_basis(rank: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(64, rank, generator=generator, dtype=torch.float64))[0]

    large, small = random_basis(47), random_basis(21)
    raw = float((large.T @ small).square().sum()) / 21
    assert abs(raw - 47 / 64) < 0.05 and subspace_similarity(large, small) < 0.1
    assert subspace_similarity(large, large[:, :9]) == pytest.approx(1.0) == subspace_similarity(large[:, :9], large)
    whole = torch.eye(64, dtype=torch.float64)
    assert subspace_similarity(whole, whole) == 1.0 and subspace_similarity(whole, large) == 0.0
    assert subspace_similarity(large[:, :0], large) is None
