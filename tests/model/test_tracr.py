"""The tracr fixtures (reference/tracr/, written by reference/tracr_fixtures.py with tracr, which CI
does not install) load through the native path, reproduce tracr's own outputs, and their weights
read and write exactly the residual dimensions of the compiled layout. Ingested with their task
slices, the layout is ground truth for the artifact's edges and ranks: the tests that require
them to match are strict expected failures, with the measured figures and why (see below)."""

import json

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

#: Keep every numerically non-zero direction (energy 1, no floor): a compiled model has no noise
#: to compress away, and its importances span many orders of magnitude by construction (tracr's
#: discretising MLPs are flat at every data point), so the default floor and the fraction search
#: would drop used dimensions by design, not by mistake.
EXACT = IngestConfig(energy=1.0, floor=0.0)


@pytest.fixture(scope="module")
def ingested(compiled, tmp_path_factory):
    """(artifact, layout, ranks the compiled weights use on the task slice) of one program."""
    model, layout = compiled
    folder = FIXTURES / model.spec.name.removeprefix("tracr-")
    [path] = ingest(
        model,
        [],
        [f"task={folder / 'task.jsonl'}"],
        tmp_path_factory.mktemp("tracr"),
        EXACT,
        progress=False,
        echo=lambda _: None,
    )
    return read_artifact(path), layout, used_ranks(model, folder / "task.jsonl")


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


# Measured with EXACT on this CPU (edge AUC of attribution / flow / weight; ranks that differ from
# used_ranks, artifact vs used): reverse 0.839 / 0.994 / 0.838, L0.mlp in 1 vs 3, out 1 vs 5,
# L1.mlp in 5 vs 9, L3H0 q, k 6 vs 5, v, out 3 vs 4; sort 0.788 / 1.000 / 0.584, embed 4 vs 6,
# L0H0 q, k 4 vs 5, L0.mlp out 5 vs 6, L1H0 q, k, v, out 4 vs 5; hist 0.571 / 0.905 / 0.833,
# pos_embed 3 vs 5, L0.mlp in 1 vs 3, unembed 5 vs 4. Why: every importance the compression and
# attribution use is a gradient (the Fisher G and H, the attribution's g_B), and a compiled model
# is locally flat on its data: tracr's MLPs are sums of steep ReLU ramps whose plateaus hold every
# data point, and its attention is saturated, so the gradients through the length / selector-width
# MLPs and the attention scores are 1e-6 to 1e-14 of those at the output (a true edge into such a
# reader scores ~0, a direction it reads has an importance at the level of float noise), while the
# OV output of the last head and the unembedding lose one direction to the softmax's indifference
# to a shift of every logit. Keys the data never varies (a PAD token) or that co-vary exactly
# (indices and opp_index given the length) also make read functionals identifiable on the data
# span only, where a writer's and another's dimensions are the same functional.
GRADIENT_FLAT = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="compiled models are flat to first order on their data (see the comment above: measured figures)",
)


@GRADIENT_FLAT
def test_attribution_ranks_the_compiled_edges(ingested):
    """Edge ROC AUC >= 0.95 on every candidate edge (writer before reader role): an edge is true
    when the writer's compiled write dimensions meet the role's compiled read dimensions. The
    score is ``attribution``, the one the catalog ranks and prunes edges by (design, "Edges")."""
    artifact, layout, _ = ingested
    edges = artifact.tables["edges"]
    truth = true_edges(edges, layout)
    assert truth.any() and not truth.all()
    assert roc_auc(edges["attribution"], truth) >= 0.95


@GRADIENT_FLAT
def test_compressed_ranks_are_the_ranks_the_compiled_weights_use(ingested):
    """Each role's rank equals what its compiled map really uses on the task slice (:func:`used_ranks`:
    the compiled dimensions, less those the slice never varies, those one another determine and
    what a softmax ignores), for every channel the slice exercises (a non-zero used rank)."""
    artifact, _, used = ingested
    ranks = artifact.tables["subspaces"].set_index(["block", "role"])["rank"]
    exercised = {(block, role): n for block, roles in used.items() for role, n in roles.items() if n}
    assert exercised
    assert {key: int(ranks[key]) for key in exercised} == exercised
