"""The first-unique-character reference model (shipped trained): it solves its task, and its layer-1
heads split the answer letters among them. Measured here by mean ablation in the model's own
PyTorch forward on fresh sequences, apart from the ground truth saved at training."""

import json

import pytest
import torch

from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.attention_only import AttentionOnly
from circuit_atlas.reference.first_unique import (
    HEAD_LETTERS,
    LETTER_EFFECTS,
    FirstUniqueRecipe,
    first_unique_answers,
    first_unique_batch,
    letter_effects,
    train_first_unique,
)

RECIPE = FirstUniqueRecipe()
HEADS = [f"L1H{h}" for h in range(RECIPE.n_heads)]


@pytest.fixture(scope="module")
def final():
    files = train_first_unique(RECIPE, default_reference_dir(), progress=False, echo=lambda _: None)
    return files[-1], AttentionOnly.from_checkpoint(RECIPE, files[-1])


@pytest.fixture(scope="module")
def fresh():
    return first_unique_batch(FirstUniqueRecipe(batch_size=2000), torch.Generator().manual_seed(1234))


def test_the_trained_model_answers_the_first_unique_letter(final, fresh):
    _, model = final
    with torch.no_grad():
        predicted = model(fresh).argmax(-1)
    assert (predicted == first_unique_answers(fresh, RECIPE.unknown)).float().mean() > 0.9


def test_each_layer_1_head_alone_serves_letters_of_its_own(final, fresh):
    """Each head has at least two letters that it alone serves: ablating it costs each of them more
    than twice what ablating any other layer-1 head does, and those letters are the head's group in
    the ground truth saved at training (on other sequences)."""
    path, model = final
    effects = letter_effects(model, fresh)
    own = {
        head: [
            letter
            for letter in range(RECIPE.unknown)
            if all(effects[head][letter] > 2 * effects[other][letter] for other in HEADS if other != head)
        ]
        for head in HEADS
    }
    assert all(len(letters) >= 2 for letters in own.values()), own
    assert {head: tuple(letters) for head, letters in own.items()} == HEAD_LETTERS
    saved = json.loads((path.parent / LETTER_EFFECTS).read_text())[path.stem]["groups"]
    assert all(set(own[head]) <= set(saved[head]) for head in HEADS), (own, saved)
    assert all(min(effects[head][letter] for letter in own[head]) > 2.5 for head in HEADS), effects
