"""The guard of every ratio of losses (ingest/behaviour.py): a ratio is measured only where the clean
model beats chance and ablating moves the metric by more than its floor and twice its standard error."""

import math

import torch

from circuit_atlas.ingest.behaviour import Part, behaviour_reason
from circuit_atlas.ingest.metrics import chance_level

CHANCE = math.log(64)


def noisy(mean: float, spread: float, n: int = 100, seed: int = 0) -> torch.Tensor:
    """``n`` values with exactly this mean and standard deviation."""
    values = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + spread * (values - values.mean()) / values.std()


def test_a_real_change_below_chance_is_measured():
    clean = noisy(3.0, 0.5)
    assert behaviour_reason([Part(1.0, clean, clean + 1.0, CHANCE)], 0.1) is None


def test_a_clean_model_no_better_than_chance_has_no_behaviour_to_keep():
    clean = noisy(CHANCE + 0.01, 0.1)
    reason = behaviour_reason([Part(1.0, clean, clean + 1.0, CHANCE)], 0.1)
    assert reason.startswith("the clean model is no better than chance") and f"{CHANCE:.3g}" in reason


def test_a_change_under_the_floor_or_within_twice_its_standard_error_is_not_measured():
    clean = noisy(3.0, 0.5)
    assert "under 0.1" in behaviour_reason([Part(1.0, clean, clean + 0.05, CHANCE)], 0.1)
    # A mean change of 0.3 nats whose standard error over 100 prompts is 0.2: within twice it.
    scattered = clean + noisy(0.3, 2.0, seed=1)
    reason = behaviour_reason([Part(1.0, clean, scattered, CHANCE)], 0.1)
    moves = "little behaviour to keep: ablating every channel moves the metric by 0.3 nats"
    assert reason == f"{moves}, within twice its standard error, 0.2"
    assert behaviour_reason([Part(1.0, clean, clean - 1.0, CHANCE)], 0.1).startswith("little behaviour")  # it helps


def test_parts_are_weighted_as_the_ratio_weighs_them():
    """A part at chance outweighed by one well below it; a change carried by one part of two."""
    below, at = noisy(2.0, 0.1), noisy(CHANCE + 1.0, 0.1)
    assert behaviour_reason([Part(0.8, below, below + 1.0, CHANCE), Part(0.2, at, at + 1.0, CHANCE)], 0.1) is None
    assert behaviour_reason([Part(0.2, below, below + 1.0, CHANCE), Part(0.8, at, at + 1.0, CHANCE)], 0.1)
    # The second part unmoved: the weighted change is 0.5 x 0.3 = 0.15 nats, over the floor of 0.1.
    assert behaviour_reason([Part(0.5, below, below + 0.3, CHANCE), Part(0.5, below, below, CHANCE)], 0.1) is None
    assert behaviour_reason([Part(0.5, below, below + 0.1, CHANCE), Part(0.5, below, below, CHANCE)], 0.1)


def test_chance_is_a_uniform_prediction():
    assert chance_level("next_token_loss", 64) == chance_level("answer_loss", 64) == CHANCE
    assert chance_level("logit_diff", 64) == 0.0
