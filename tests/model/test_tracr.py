"""The tracr fixtures (reference/tracr/, written by reference/tracr_fixtures.py with tracr, which CI
does not install) load through the native path, reproduce tracr's own outputs, and their weights
read and write exactly the residual dimensions of the compiled layout. Ingested with their task
slices and ``--importance activation``, the artifact's ranks are the ranks the compiled maps use
and its edge weights rank the compiled edges; the loss's Fisher importance and the attribution,
both gradients, cannot (strict expected failures, with the measured figures and why, below)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.fingerprints import probe_slice
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.reference.tracr_fixtures import FIXTURES, PROGRAMS


@pytest.fixture(params=PROGRAMS, scope="module")
def compiled(request):
    folder = FIXTURES / request.param
    model = load_model(str(folder / "config.json"), str(folder / "weights.pt"))
    return model, json.loads((folder / "layout.json").read_text())


def test_fixture_reproduces_tracr_outputs_in_one_padded_batch(compiled):
    model, layout = compiled
    samples = layout["samples"]
    length = max(len(s["tokens"]) for s in samples)
    pad = layout["input_vocab"]["PAD"]
    tokens = torch.tensor([s["tokens"] + [pad] * (length - len(s["tokens"])) for s in samples])
    real = torch.tensor([[i < len(s["tokens"]) for i in range(length)] for s in samples])
    with torch.no_grad():
        logits = model.run(tokens, attention_mask=real)
    for row, sample in zip(logits, samples):
        n = len(sample["tokens"])
        tracr = torch.tensor(sample["logits"])  # tracr's output space at every position after BOS
        torch.testing.assert_close(row[1:n], tracr - tracr.mean(-1, keepdim=True), atol=1e-5, rtol=1e-5)
        assert row[1:n].argmax(-1).tolist() == sample["output"]
    assert model.spec.normalization == "none" and not model.spec.causal
    assert model.spec.d_vocab_out == len(layout["output_vocab"]) != model.spec.d_vocab


def dims(labels, layout):
    return sorted(layout["residual"].index(label) for label in labels)


def nonzero(matrix, axis):
    """Indices of the non-zero rows (axis=1) or columns (axis=0) of ``matrix``."""
    return torch.nonzero(matrix.abs().amax(axis) > 1e-6).flatten().tolist()


def test_weights_read_and_write_exactly_the_compiled_layout(compiled):
    model, layout = compiled
    params, w = model.runner.params, model.weights
    channels = layout["channels"]
    for l in range(model.spec.n_layers):
        for h in range(model.spec.n_heads):
            head = channels.get(f"L{l}H{h}", {"q": [], "k": [], "v": [], "out": []})
            qk = w.W_Q[l, h] @ w.W_K[l, h].T
            ov = w.W_V[l, h] @ w.W_O[l, h]
            assert nonzero(qk, 1) == dims(head["q"], layout) and nonzero(qk, 0) == dims(head["k"], layout)
            assert nonzero(ov, 1) == dims(head["v"], layout) and nonzero(ov, 0) == dims(head["out"], layout)
        mlp = channels.get(f"L{l}.mlp", {"in": [], "out": []})
        assert nonzero(params[f"blocks.{l}.mlp.W_in"], 1) == dims(mlp["in"], layout)
        assert nonzero(params[f"blocks.{l}.mlp.W_out"], 0) == dims(mlp["out"], layout)
    assert nonzero(params["embed.W_E"], 0) == dims(channels["embed"]["out"], layout)
    assert nonzero(params["pos_embed.W_pos"], 0) == dims(channels["pos_embed"]["out"], layout)
    assert nonzero(params["unembed.W_U"], 1) == dims(channels["unembed"]["in"], layout)


# Ingesting the compiled models: the compiled layout is the ground truth of edges and ranks.

#: Keep every numerically non-zero direction (energy 1, no floor) and weigh directions by the data
#: alone: a compiled model has no noise to compress away, and it is flat on its own data (see
#: :data:`GRADIENT_FLAT`), so the default Fisher importance, floor and fraction search would drop
#: used dimensions by design, not by mistake.
EXACT = IngestConfig(energy=1.0, floor=0.0, importance="activation")


def ingest_program(compiled, config: IngestConfig, folder):
    """(artifact, layout, ranks the compiled weights use on the task slice) of one program."""
    model, layout = compiled
    fixture = FIXTURES / model.spec.name.removeprefix("tracr-")
    task = fixture / "task.jsonl"
    [path] = ingest(model, [], [f"task={task}"], folder, config, progress=False, echo=lambda _: None)
    return read_artifact(path), layout, used_ranks(model, task)


@pytest.fixture(scope="module")
def ingested(compiled, tmp_path_factory):
    return ingest_program(compiled, EXACT, tmp_path_factory.mktemp("tracr"))


@pytest.fixture(scope="module")
def ingested_by_fisher(compiled, tmp_path_factory):
    return ingest_program(compiled, replace(EXACT, importance="fisher"), tmp_path_factory.mktemp("tracr-fisher"))


def roc_auc(scores, truth) -> float:
    """P(score of a true edge > score of a false one), ties counting one half (Mann-Whitney)."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # mid-ranks, 1-based
    positives, negatives = truth.sum(), (~truth).sum()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def test_roc_auc_counts_ties_as_one_half():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0, 0, 0, 1], [1, 0, 0, 1]) == 0.75


def true_edges(edges, layout) -> np.ndarray:
    """Per candidate edge writer -> reader(role): does the writer write a dimension that role reads?"""
    channels = layout["channels"]
    return np.array(
        [
            bool(set(channels.get(w, {}).get("out", ())) & set(channels.get(r, {}).get(role, ())))
            for w, r, role in zip(edges["writer"], edges["reader"], edges["role"])
        ]
    )


def numerical_rank(matrix: torch.Tensor, tolerance: float = 1e-4) -> int:
    singular = torch.linalg.svdvals(matrix.detach().double())
    return int((singular > tolerance * singular.max()).sum()) if singular.numel() and singular.max() > 1e-9 else 0


def used_ranks(model, task) -> dict[str, dict[str, int]]:
    """Per channel and role, the rank of its compiled map on the task slice's real tokens: reads
    ``q`` (k) the rank of the attention scores queries x keys (keys x queries), keys centred, for
    a softmax ignores what every key shares; ``v`` of X W_V W_O; MLP ``in`` of X W_in; ``unembed``
    of X W_U (W_U centred, as the loaded model's is: the softmax ignores a shift of every logit);
    writes ``out`` of the channel's outputs."""
    rows = [json.loads(line) for line in task.read_text().splitlines()]
    width = max(len(r["tokens"]) for r in rows)
    tokens = torch.tensor([r["tokens"] + [0] * (width - len(r["tokens"])) for r in rows])
    real = torch.tensor([[i < len(r["tokens"]) for i in range(width)] for r in rows])
    spec, w, params = model.spec, model.weights, model.runner.params
    names = [site(s, l) for l in range(spec.n_layers) for s in ("resid_pre", "resid_mid", "z", "mlp_out")]
    with torch.no_grad():
        _, acts = model.run_capturing(tokens, [*names, site("embed"), site("pos_embed"), site("resid_final")], [], real)
    acts = {name: value[real].detach() for name, value in acts.items()}
    ranks = {
        "embed": {"out": numerical_rank(acts[site("embed")])},
        "pos_embed": {"out": numerical_rank(acts[site("pos_embed")])},
        "unembed": {"in": numerical_rank(acts[site("resid_final")] @ params["unembed.W_U"])},
    }
    for l in range(spec.n_layers):
        x = acts[site("resid_pre", l)]
        for h in range(spec.n_heads):
            # scores = queries @ keysᵀ [tokens, tokens] = Q_q (R_q R_kᵀ) Q_kᵀ: the same singular values
            _, queries = torch.linalg.qr((x @ w.W_Q[l, h] @ w.W_K[l, h].T).double())
            _, keys = torch.linalg.qr((x - x.mean(0)).double())
            scores = queries @ keys.T
            ranks[f"L{l}H{h}"] = {
                "q": numerical_rank(scores),
                "k": numerical_rank(scores.T),
                "v": numerical_rank(x @ w.W_V[l, h] @ w.W_O[l, h]),
                "out": numerical_rank(acts[site("z", l)][:, h] @ w.W_O[l, h]),
            }
        ranks[f"L{l}.mlp"] = {
            "in": numerical_rank(acts[site("resid_mid", l)] @ params[f"blocks.{l}.mlp.W_in"]),
            "out": numerical_rank(acts[site("mlp_out", l)]),
        }
    return ranks


def test_probes_of_a_class_output_model_score_its_own_prediction(compiled):
    model, _ = compiled
    tokens = torch.randint(0, model.spec.d_vocab, (3, model.spec.n_ctx), generator=torch.Generator().manual_seed(0))
    probe = probe_slice(model, "random", tokens)
    with torch.no_grad():
        prediction = model.run(tokens).argmax(-1)
    assert probe.metric == "label_loss" and torch.equal(probe.answers, prediction)
    assert probe.positions.tolist() == [list(range(model.spec.n_ctx))] * 3


# Measured on this CPU, energy 1 and no floor (edge ROC AUC of attribution / flow / weight; roles
# whose rank differs from used_ranks, artifact vs used). With ``--importance activation``: reverse
# 0.933 / 0.997 / 0.999, sort 0.883 / 1.000 / 1.000, hist 0.595 / 0.976 / 1.000, every rank equal
# (17, 13 and 9 roles). With the Fisher importance (its gradients at float-noise level, so these
# move between machines): reverse 0.919 / 0.994 / 0.878, ranks differ on
# embed out 3 vs 5, L0.mlp in 1 vs 3, out 4 vs 5, L1.mlp in 8 vs 9, L3H0 v, out 3 vs 4; sort
# 0.835 / 0.996 / 0.604, 10 roles differ; hist 0.595 / 0.905 / 0.833, 4 roles differ. Why: the
# Fisher weighting and the attribution are gradients, and a compiled model is locally flat on its
# data: tracr's MLPs are sums of steep ReLU ramps whose plateaus hold every data point, and its
# attention is saturated, so the gradients through the length / selector-width MLPs and the
# attention scores are 1e-6 to 1e-14 of those at the output (a true edge into such a reader scores
# ~0 by attribution, a direction it reads has a Fisher importance at the level of float noise).
GRADIENT_FLAT = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="compiled models are flat to first order on their data (see the comment above: measured figures)",
)


def assert_edges_ranked(edges, layout, score: str) -> None:
    """Edge ROC AUC >= 0.95 of ``score`` on every candidate edge (writer before reader role): an
    edge is true when the writer's compiled write dimensions meet the role's compiled read dimensions."""
    truth = true_edges(edges, layout)
    assert truth.any() and not truth.all()
    assert roc_auc(edges[score], truth) >= 0.95, roc_auc(edges[score], truth)


@pytest.mark.parametrize("score", ["weight", "flow"])
def test_edge_weight_and_flow_rank_the_compiled_edges(ingested, score):
    """``weight`` (the alignment of a writer's write subspace with a reader's read subspace) and
    ``flow`` (each writer's share of what the writers put in the reader's subspace, through the data's
    output moments) of the activation-weighted compression."""
    artifact, layout, _ = ingested
    assert_edges_ranked(artifact.tables["edges"], layout, score)


def assert_ranks_used(artifact, used) -> None:
    """Each role's rank equals what its compiled map really uses on the task slice (:func:`used_ranks`:
    the compiled dimensions, less those the slice never varies, those one another determine and
    what a softmax ignores), for every channel the slice exercises (a non-zero used rank)."""
    ranks = artifact.tables["subspaces"].set_index(["block", "role"])["rank"]
    exercised = {(block, role): n for block, roles in used.items() for role, n in roles.items() if n}
    assert exercised
    assert {key: int(ranks[key]) for key in exercised} == exercised


def test_compressed_ranks_are_the_ranks_the_compiled_weights_use(ingested):
    artifact, _, used = ingested
    assert_ranks_used(artifact, used)


@GRADIENT_FLAT
def test_attribution_ranks_the_compiled_edges(ingested_by_fisher):
    """``attribution``, the score the catalog ranks and prunes edges by by default (design, "Edges")."""
    artifact, layout, _ = ingested_by_fisher
    assert_edges_ranked(artifact.tables["edges"], layout, "attribution")


@GRADIENT_FLAT
def test_fisher_ranks_are_the_ranks_the_compiled_weights_use(ingested_by_fisher):
    artifact, _, used = ingested_by_fisher
    assert_ranks_used(artifact, used)


def test_the_cli_ingests_with_the_activation_importance(tmp_path):
    """``circuit-atlas ingest CONFIG --weights ... --importance activation`` (no catalog needed)
    writes an artifact whose settings and ranks are those of :data:`EXACT`."""
    from click.testing import CliRunner

    from circuit_atlas.cli import cli

    folder = FIXTURES / "hist"
    arguments = ["ingest", str(folder / "config.json"), "--weights", str(folder / "weights.pt")]
    arguments += ["--data", f"task={folder / 'task.jsonl'}", "--out", str(tmp_path), "--device", "cpu"]
    arguments += ["--importance", "activation", "--energy", "1", "--floor", "0"]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    [path] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    artifact = read_artifact(path)
    assert artifact.manifest["config"]["importance"] == "activation"
    model = load_model(str(folder / "config.json"), str(folder / "weights.pt"))
    assert_ranks_used(artifact, used_ranks(model, folder / "task.jsonl"))
