"""The first-unique-character task's answers against a plain Python reading of the rule."""

import torch

from circuit_atlas.reference.first_unique import FirstUniqueRecipe, first_unique_answers, first_unique_batch


def rule(sequence: list[int], unknown: int) -> list[int]:
    """At each position, the first letter seen so far that occurs exactly once, else ``unknown``."""
    answers = []
    for end in range(1, len(sequence) + 1):
        seen = sequence[:end]
        answers.append(next((letter for letter in seen if seen.count(letter) == 1), unknown))
    return answers


def test_answers_follow_the_rule_on_random_sequences():
    recipe = FirstUniqueRecipe(batch_size=200)
    tokens = first_unique_batch(recipe, torch.Generator().manual_seed(0))
    assert tokens.max() < recipe.unknown
    answers = first_unique_answers(tokens, recipe.unknown)
    assert answers.tolist() == [rule(row, recipe.unknown) for row in tokens.tolist()]
    assert set(answers.unique().tolist()) == set(range(recipe.d_vocab))  # every letter and "?" answer somewhere


def test_a_repeated_letter_hands_the_answer_to_the_next_unique_one():
    assert first_unique_answers(torch.tensor([[0, 1, 0, 2, 1, 2]]), 10).tolist() == [[0, 0, 1, 1, 2, 10]]
