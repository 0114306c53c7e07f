"""The key-value lookup reference model (reference/keyvalue.py) solves its task with the known
algorithm: a layer-0 previous-token head at the value positions and a layer-1 head that attends from
the query to the matching value; mean-ablating either breaks the task, while on the trivial slice
(every pair carries the answer) the key matching, hence the previous-token head, is not needed. The
ingest finds the same: the task slice's circuit holds both heads, the trivial slice's is smaller."""

import json

import pytest
import torch

from circuit_atlas.demo import CIRCUIT
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.pipeline import ingest


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


@pytest.fixture(scope="module")
def heads(trained):
    """The previous-token head (layer 0) and the lookup head (layer 1) by attention pattern, with the
    answer loss (nats) mean-ablating each adds on each slice."""
    model, slices, scores = trained
    previous = max(range(model.spec.n_heads), key=lambda h: scores["value_to_key"][0][h])
    lookup = max(range(model.spec.n_heads), key=lambda h: scores["query_to_value"][1][h])
    effects = {}
    for name, (tokens, answers) in slices.items():
        clean = answer_loss(model, tokens, answers)
        effects[name] = {
            (l, h): answer_loss(model, tokens, answers, mean_ablated(l, h)) - clean
            for l, h in ((0, previous), (1, lookup))
        }
    return (0, previous), (1, lookup), effects


def artifact_circuit(artifact, slice_name: str, min_effect: float, min_attribution: float):
    """The library's ``circuit`` query on an artifact's tables: the channels whose mean ablation adds
    at least ``min_effect`` nats on the slice, and the slice edges between them of at least
    ``min_attribution``."""
    activity = artifact.tables["activity"]
    members = set(activity[(activity["slice"] == slice_name) & (activity["ablation"] >= min_effect)]["block"])
    edges = artifact.tables["slice_edges"]
    edges = edges[(edges["slice"] == slice_name) & (edges["attribution"] >= min_attribution)]
    return members, {(w, r) for w, r in zip(edges["writer"], edges["reader"]) if w in members and r in members}


@pytest.fixture(scope="module")
def circuits(keyvalue_checkpoints, tmp_path_factory):
    final = keyvalue_checkpoints[-1]
    data = [f"{name}={final.parent / name}.jsonl" for name in ("task", "trivial")]
    out = tmp_path_factory.mktemp("keyvalue-ingest")
    [path] = ingest(str(final), [], data, out, IngestConfig(), progress=False, echo=lambda _: None)
    artifact = read_artifact(path)
    return {name: artifact_circuit(artifact, name, **CIRCUIT) for name in ("task", "trivial")}


def test_the_model_answers_both_slices(trained):
    model, slices, _ = trained
    for name, (tokens, answers) in slices.items():
        with torch.no_grad():
            accuracy = (model.run(tokens)[:, -1].argmax(-1) == answers).float().mean()
        assert accuracy >= 0.95, name
        assert (tokens[:, -1:] == tokens[:, 0:-1:2]).any(1).all()  # the query is one of the prompt's keys


def test_attention_patterns_and_ablations_identify_the_lookup_circuit(trained, heads):
    _, _, scores = trained
    previous, lookup, effects = heads
    assert scores["value_to_key"][0][previous[1]] >= 0.5
    assert scores["query_to_value"][1][lookup[1]] >= 0.5
    assert effects["task"][previous] >= 1.0 and effects["task"][lookup] >= 1.0  # nats
    # no key matching is needed when every value is the answer
    assert effects["trivial"][previous] <= 0.2 * effects["task"][previous]


def test_the_task_circuit_holds_the_lookup_heads_and_the_trivial_one_is_smaller(heads, circuits):
    previous, lookup, _ = heads
    (task, task_edges), (trivial, _) = circuits["task"], circuits["trivial"]
    names = {f"L{l}H{h}" for l, h in (previous, lookup)}
    assert names <= task, sorted(task)
    assert (f"L{previous[0]}H{previous[1]}", f"L{lookup[0]}H{lookup[1]}") in task_edges  # K-composition
    assert f"L{previous[0]}H{previous[1]}" not in trivial
    assert len(trivial) < len(task), (sorted(trivial), sorted(task))
