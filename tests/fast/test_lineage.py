"""Lineages (ingest/matching.py): a channel continues its lineage only while it stays directly similar
to the lineage's start, so a subspace that drifts by steps that each pass the threshold starts a new
lineage where the drift from the start does not."""

import math

import torch

from circuit_atlas.ingest.channels import Channel
from circuit_atlas.ingest.matching import following, matches, series_place

MLP = Channel("mlp", 0, None, "L0.mlp", 1, 0)


def turned(degrees: float) -> dict[str, torch.Tensor]:
    """The MLP's in and out subspaces: one direction in the plane of the first two axes, at ``degrees``."""
    angle = math.radians(degrees)
    basis = torch.tensor([[math.cos(angle)], [math.sin(angle)], [0.0]])
    return {"L0.mlp/in": basis, "L0.mlp/out": basis}


def test_a_drift_in_steps_that_each_match_starts_a_new_lineage_where_the_start_is_left_behind():
    """Steps of 20 degrees: cos^2 = 0.88 between neighbours, so every link is a MATCHES at 0.8; the
    direct similarity to the start falls to cos^2(40) = 0.59 at the third checkpoint, where a new
    lineage starts, and to cos^2(60) = 0.25 from the first at the fourth."""
    previous, starts, last = None, [], turned(60)
    for step, degrees in enumerate((0, 20, 40, 60)):
        bases, label = turned(degrees), f"step-{step}"
        linked = matches([MLP], bases, {"L0.mlp": [0.0]}, previous, 0.8)
        assert len(linked) == (step > 0)  # every neighbour matches
        place = series_place([MLP], label, bases, previous, None if degrees == 60 else last, 0.8)
        starts.append(place.lineage["L0.mlp"])
        previous = following(label, bases, {"L0.mlp": [0.0]}, previous, place.lineage)
    close = math.cos(math.radians(20)) ** 2
    assert [start for start, _ in starts] == ["step-0", "step-0", "step-2", "step-2"]
    assert [round(similarity, 6) for _, similarity in starts] == [1.0, round(close, 6), 1.0, round(close, 6)]
    assert round(place.to_first["L0.mlp/in"], 6) == round(math.cos(math.radians(60)) ** 2, 6)
    assert place.to_last["L0.mlp/out"] == 1.0


def test_the_first_checkpoint_of_a_series_starts_every_lineage_and_is_its_own_first():
    place = series_place([MLP], "step-0", turned(0), None, turned(90), 0.8)
    assert place.lineage == {"L0.mlp": ("step-0", 1.0)}
    assert place.to_first == {"L0.mlp/in": 1.0, "L0.mlp/out": 1.0}
    assert place.to_last["L0.mlp/in"] < 1e-12
