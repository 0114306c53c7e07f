"""Task slices: prompts of any length with a metric and scored positions, read from JSONL or
Parquet, and every bad file a clear error."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_data import SPEC

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.metrics import Targets, sequence_losses


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def load(path):
    return load_slice(f"task={path}", SPEC, None, 12, 4, 0)


def test_prompts_of_different_lengths_are_right_padded_and_masked(tmp_path):
    rows = [
        {"tokens": [1, 2, 3, 4, 5], "metric": "answer_loss", "position": -1, "answer": 7},
        {"tokens": [6, 7], "metric": "answer_loss", "position": -1, "answer": 9},
    ]
    data = load(write_jsonl(tmp_path / "t.jsonl", rows))
    assert data.tokens.shape == (2, 5) and data.mask.tolist() == [[True] * 5, [True, True, False, False, False]]
    assert (data.metric, data.scored, data.n_tokens) == ("answer_loss", "position -1", 7)
    assert data.positions.tolist() == [[4], [1]] and data.answers.tolist() == [[7], [9]]


def test_several_scored_positions_per_prompt_and_parquet(tmp_path):
    rows = [
        {"tokens": [1, 2, 3, 4], "metric": "label_loss", "position": [0, 2], "label": [3, 1]},
        {"tokens": [5, 6, 7, 8], "metric": "label_loss", "position": [1], "label": [2]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    data = load(tmp_path / "t.parquet")
    assert data.positions.tolist() == [[0, 2], [1, -1]] and data.answers.tolist() == [[3, 1], [2, -1]]
    assert data.scored == "positions listed per prompt"


def test_the_id_depends_on_tokens_metric_and_answers(tmp_path):
    base = {"tokens": [1, 2, 3], "metric": "answer_loss", "position": -1, "answer": 4}
    first = load(write_jsonl(tmp_path / "a.jsonl", [base, base]))
    again = load(write_jsonl(tmp_path / "b.jsonl", [base, base]))
    other = load(write_jsonl(tmp_path / "c.jsonl", [base, {**base, "answer": 5}]))
    assert first.id == again.id != other.id


def test_metrics_score_the_given_positions_and_logit_diff_is_a_loss():
    logits = torch.zeros(2, 3, 10)
    logits[0, 1, 4], logits[0, 1, 6], logits[1, 2, 5] = 3.0, 1.0, 2.0
    tokens, mask = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    positions, answers = torch.tensor([[1], [2]]), torch.tensor([[4], [5]])
    diff = sequence_losses(logits, tokens, Targets("logit_diff", mask, positions, answers, torch.tensor([[6], [1]])))
    assert diff.tolist() == [-2.0, -2.0]  # stored as minus (logit[answer] - logit[counterfactual])
    answer = sequence_losses(logits, tokens, Targets("answer_loss", mask, positions, answers))
    expected = [-torch.log_softmax(logits[0, 1], -1)[4], -torch.log_softmax(logits[1, 2], -1)[5]]
    torch.testing.assert_close(answer, torch.stack(expected))


def test_next_token_loss_ignores_padding():
    logits = torch.randn(1, 4, 10)
    tokens = torch.tensor([[1, 2, 3, 0]])
    padded = sequence_losses(logits, tokens, Targets("next_token_loss", torch.tensor([[True, True, True, False]])))
    short = sequence_losses(
        logits[:, :3], tokens[:, :3], Targets("next_token_loss", torch.ones(1, 3, dtype=torch.bool))
    )
    torch.testing.assert_close(padded, short)


BAD_FILES = {
    "not json": ("{tokens: [1, 2]}\n", "is not JSON"),
    "not an object": ("[1, 2, 3]\n", "not a JSON object"),
    "no tokens": ('{"metric": "next_token_loss"}\n', "neither 'tokens' nor 'text'"),
    "text without tokenizer": ('{"text": "hello"}\n', "no tokenizer"),
    "tokens not ints": ('{"tokens": [1, "a"]}\n', "must be a list of token ids"),
    "mixed metrics": (
        '{"tokens": [1, 2], "metric": "next_token_loss"}\n'
        '{"tokens": [1, 2], "metric": "answer_loss", "position": -1, "answer": 1}\n',
        "mixes metrics",
    ),
    "unknown metric": ('{"tokens": [1, 2], "metric": "accuracy"}\n', "unknown metric 'accuracy'"),
    "no answer": ('{"tokens": [1, 2], "metric": "answer_loss", "position": -1}\n', "needs 'position' and 'answer'"),
    "no counterfactual": (
        '{"tokens": [1, 2], "metric": "logit_diff", "position": -1, "answer": 3}\n',
        "needs 'counterfactual'",
    ),
    "position outside": (
        '{"tokens": [1, 2], "metric": "answer_loss", "position": 5, "answer": 3}\n',
        "outside the prompt of 2 tokens",
    ),
    "uneven lists": (
        '{"tokens": [1, 2], "metric": "answer_loss", "position": [0, 1], "answer": [3]}\n',
        "the same number of entries",
    ),
    "answer outside vocabulary": (
        '{"tokens": [1, 2], "metric": "answer_loss", "position": -1, "answer": 99}\n',
        "answers up to 99",
    ),
    "empty": ("\n", "has no prompts"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_task_files_are_clear_errors(tmp_path, case):
    text, message = BAD_FILES[case]
    (tmp_path / "t.jsonl").write_text(text)
    with pytest.raises(UserError, match=message):
        load(tmp_path / "t.jsonl")
