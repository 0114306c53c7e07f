"""Data slices: built-ins, token files, text, and each bad input as a clear error."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.data import DataSlice, load_slice, synthetic_tokens, validated
from circuit_atlas.ingest.model_adapter import ModelSpec

SPEC = ModelSpec(
    name="m",
    family="GPT2LMHeadModel",
    n_layers=2,
    d_model=32,
    n_heads=4,
    d_head=8,
    d_mlp=64,
    act_fn="gelu",
    n_ctx=16,
    d_vocab=32,
    positional="standard",
    normalization="LN",
    parallel_attn_mlp=False,
    source="m",
)


def test_repeated_sequences_repeat_their_first_half():
    tokens = synthetic_tokens("repeated", 32, 5, 16, seed=0)
    assert tokens.shape == (5, 16)
    assert torch.equal(tokens[:, :8], tokens[:, 8:])


def test_built_in_slices_are_deterministic_and_named():
    a = load_slice("repeated", SPEC, None, 12, 4, seed=3)
    b = load_slice("repeated", SPEC, None, 12, 4, seed=3)
    assert a.id == b.id and a.name == "repeated" and a.n_tokens == 48
    named = load_slice("probe=random", SPEC, None, 12, 4, seed=3)
    assert named.name == "probe" and named.id != a.id


def test_token_files_two_and_one_dimensional(tmp_path):
    np.save(tmp_path / "grid.npy", np.arange(40).reshape(4, 10) % 32)
    torch.save(torch.arange(50) % 32, tmp_path / "flat.pt")
    grid = load_slice(str(tmp_path / "grid.npy"), SPEC, None, 12, 4, 0)
    flat = load_slice(str(tmp_path / "flat.pt"), SPEC, None, 12, 4, 0)
    assert grid.tokens.shape == (4, 10) and grid.name == "grid"
    assert flat.tokens.shape == (4, 12)  # 50 tokens cut into 4 sequences of 12, 2 left over


def test_split_holds_out_prompts_drawn_at_random_by_the_seed():
    """A slice sorted by class (the first half one class, the second another) holds out both: the
    held-out prompts are a seeded random draw, not the last rows; each part keeps the slice's order."""
    data = DataSlice.of_tokens("s", "", torch.arange(400).view(100, 4))
    fit, held = data.split(0.2, seed=0)
    assert (fit.n_sequences, held.n_sequences) == (80, 20) and (fit.name, fit.metric) == ("s", "next_token_loss")
    rows = lambda part: (part.tokens[:, 0] // 4).tolist()  # noqa: E731 (row index of each prompt)
    assert sorted(rows(fit) + rows(held)) == list(range(100)) and rows(held) == sorted(rows(held))
    assert 5 <= sum(r < 50 for r in rows(held)) <= 15  # both classes held out
    assert rows(data.split(0.2, seed=0)[1]) == rows(held) and rows(data.split(0.2, seed=1)[1]) != rows(held)
    with pytest.raises(UserError, match="at least 2"):
        DataSlice.of_tokens("s", "", torch.arange(4).view(1, 4)).split(0.2, seed=0)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: np.save(p / "empty.npy", np.zeros((0,), dtype=np.int64)) or "empty.npy", "is empty"),
        (lambda p: np.save(p / "long.npy", np.zeros((2, 40), dtype=np.int64)) or "long.npy", "context of 16"),
        (lambda p: np.save(p / "vocab.npy", np.full((2, 8), 99)) or "vocab.npy", r"vocabulary of 32"),
        (lambda p: np.save(p / "floats.npy", np.zeros((2, 8))) or "floats.npy", "must be integers"),
        (lambda p: (p / "text.txt").write_text("hello") and "text.txt", "no tokenizer"),
        (lambda p: (p / "table.csv").write_text("1,2") and "table.csv", "unknown data format"),
        (lambda p: "missing.npy", "no file"),
    ],
)
def test_bad_data_is_a_clear_error(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        load_slice(str(tmp_path / make(tmp_path)), SPEC, None, 12, 4, 0)


def test_unknown_built_in_and_single_token_sequences():
    with pytest.raises(UserError, match="no file"):
        load_slice("zigzag", SPEC, None, 12, 4, 0)
    with pytest.raises(UserError, match="at least 2"):
        validated(DataSlice.of_tokens("s", "", torch.zeros(3, 1, dtype=torch.long)), SPEC)


def test_next_token_loss_needs_tokens_the_model_can_predict():
    """A classifier (d_vocab_out < d_vocab) cannot be scored on next tokens beyond its classes."""
    classifier = replace(SPEC, d_vocab_out=5)
    with pytest.raises(UserError, match="predicts 5 classes"):
        validated(DataSlice.of_tokens("s", "", torch.arange(24).view(3, 8)), classifier)
    small = DataSlice.of_tokens("s", "", torch.arange(24).view(3, 8) % 5)
    assert validated(small, classifier) is small
