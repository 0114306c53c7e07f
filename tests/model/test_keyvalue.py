"""The key-value lookup reference model (reference/keyvalue.py) solves its task with the known
algorithm: a layer-0 previous-token head at the value positions and a layer-1 head that attends from
the query to the matching value; mean-ablating either breaks the task, while on the trivial slice
(every pair carries the answer) the key matching, hence the previous-token head, is not needed."""

import json

import pytest
import torch

from circuit_atlas.ingest.model_adapter import load_model, site


@pytest.fixture(scope="module")
def trained(keyvalue_checkpoints):
    final = keyvalue_checkpoints[-1]
    root = final.parent
    slices = {}
    for name in ("task", "trivial"):
        rows = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
        slices[name] = (torch.tensor([r["tokens"] for r in rows]), torch.tensor([r["answer"] for r in rows]))
    scores = json.loads((root / "head_scores.json").read_text())[final.name]
    return load_model(str(final)), slices, scores


def answer_loss(model, tokens, answers, hooks=()):
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.run(tokens, hooks)[:, -1], answers))


def mean_ablated(layer: int, head: int):
    """Hook on hook_z: the head's output replaced by its mean over the prompts at each position."""

    def hook(z, _):
        z = z.clone()
        z[:, :, head] = z[:, :, head].mean(0, keepdim=True)
        return z

    return [(site("z", layer), hook)]


def test_the_model_answers_both_slices(trained):
    model, slices, _ = trained
    for name, (tokens, answers) in slices.items():
        with torch.no_grad():
            accuracy = (model.run(tokens)[:, -1].argmax(-1) == answers).float().mean()
        assert accuracy >= 0.95, name
        assert (tokens[:, -1:] == tokens[:, 0:-1:2]).any(1).all()  # the query is one of the prompt's keys


def test_attention_patterns_and_ablations_identify_the_lookup_circuit(trained):
    model, slices, scores = trained
    previous = max(range(model.spec.n_heads), key=lambda h: scores["value_to_key"][0][h])
    lookup = max(range(model.spec.n_heads), key=lambda h: scores["query_to_value"][1][h])
    assert scores["value_to_key"][0][previous] >= 0.5
    assert scores["query_to_value"][1][lookup] >= 0.5
    (tokens, answers), (easy, easy_answers) = slices["task"], slices["trivial"]
    clean, clean_easy = answer_loss(model, tokens, answers), answer_loss(model, easy, easy_answers)
    effect = {
        (l, h): answer_loss(model, tokens, answers, mean_ablated(l, h)) - clean for l, h in ((0, previous), (1, lookup))
    }
    assert effect[(0, previous)] >= 1.0 and effect[(1, lookup)] >= 1.0  # nats
    easy_effect = answer_loss(model, easy, easy_answers, mean_ablated(0, previous)) - clean_easy
    assert easy_effect <= 0.2 * effect[(0, previous)]  # no key matching needed when every value is the answer
