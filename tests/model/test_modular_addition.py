"""The modular-addition reference series (reference/modular_addition.py): shipped complete, its truth
reproducible from the shipped weights, read by the ingest's native loader as its own plain PyTorch
forward computes it (no normalisation, an output vocabulary smaller than the input's), and trained
through both phases: memorisation, then the algorithm."""

import json
import math

import pytest
import torch

from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.reference.attention_only import NATIVE_CONFIG
from circuit_atlas.reference.modular_addition import (
    PROGRESS,
    ModularAddition,
    ModularAdditionRecipe,
    all_pairs,
    progress_measures,
)
from circuit_atlas.reference.training import SHIPPED, is_trained

RECIPE = ModularAdditionRecipe()


def test_the_series_is_shipped_complete_and_its_truth_is_reproducible(modular_addition_checkpoints):
    assert is_trained(SHIPPED / RECIPE.name, RECIPE)
    steps = range(0, RECIPE.steps + 1, RECIPE.checkpoint_every)
    assert [c.stem for c in modular_addition_checkpoints] == [f"step-{s:05d}" for s in steps]
    shipped = json.loads((SHIPPED / RECIPE.name / PROGRESS).read_text())
    measured = progress_measures(modular_addition_checkpoints, RECIPE)
    assert measured["key_frequencies"] == shipped["key_frequencies"]
    for label, values in measured["checkpoints"].items():
        assert values == pytest.approx(shipped["checkpoints"][label], abs=1e-5), label


def test_the_native_loader_computes_what_the_plain_model_does(modular_addition_checkpoints):
    final = modular_addition_checkpoints[-1]
    prompts, _ = all_pairs(RECIPE)
    with torch.no_grad():
        plain = ModularAddition.from_checkpoint(RECIPE, final)(prompts).log_softmax(-1)
        loaded = load_model(str(final.parent / NATIVE_CONFIG), str(final)).run(prompts)[:, -1].log_softmax(-1)
    assert loaded.shape == (RECIPE.p**2, RECIPE.p)
    torch.testing.assert_close(loaded, plain, atol=1e-4, rtol=0)


def test_the_run_memorises_first_and_forms_the_algorithm_later(modular_addition_checkpoints):
    """Some checkpoint fits its training pairs while its held-out loss is above chance; the last one
    answers at least 99 % of the held-out pairs, with its embedding concentrated on a few frequencies."""
    truth = progress_measures(modular_addition_checkpoints, RECIPE)
    rows = list(truth["checkpoints"].values())
    assert any(r["train_loss"] < 0.1 and r["held_out_loss"] > math.log(RECIPE.p) for r in rows)
    assert rows[-1]["held_out_accuracy"] >= 0.99 and rows[-1]["key_share"] >= 0.7
    assert 1 <= len(truth["key_frequencies"]) <= 6
