"""The whole ingest on tiny random TransformerLens-native models of every architecture it runs:
attention-only (with LayerNorm; without normalisation, bidirectional, with its own output classes),
one layer, RMSNorm with a gated MLP and grouped keys and values, rotary positions with a parallel
attention and MLP, and LayerNorm folded in the checkpoint (LNPre). Each artifact has exactly the
channels and edges of its architecture, subspaces for every role, finite effects, and a property
its architecture implies."""

import json
import math

import pytest
import torch
from builders import ingest_native

from circuit_atlas.ingest.config import IngestConfig

SMALL = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20)
CLASSES = 7
ARCHITECTURES = {
    "attn-only-layernorm": dict(attn_only=True, normalization_type="LN"),
    "attn-only-no-norm-bidirectional-classes": dict(
        attn_only=True, normalization_type=None, attention_dir="bidirectional", d_vocab_out=CLASSES
    ),
    "one-layer": dict(n_layers=1, d_mlp=64, act_fn="gelu", normalization_type="LN"),
    "rms-gated-grouped-kv": dict(
        d_mlp=48, act_fn="silu", normalization_type="RMS", gated_mlp=True, n_key_value_heads=2
    ),
    "rotary-parallel": dict(
        d_mlp=64,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=8,
        parallel_attn_mlp=True,
    ),
    "layernorm-folded": dict(d_mlp=64, act_fn="relu", normalization_type="LNPre"),
}


def class_slice(path, n=16, length=12, seed=0):
    """A label_loss task: every position labelled with its token's class (token id mod CLASSES)."""
    tokens = torch.randint(0, SMALL["d_vocab"], (n, length), generator=torch.Generator().manual_seed(seed)).tolist()
    rows = [
        {"tokens": t, "metric": "label_loss", "position": list(range(length)), "label": [x % CLASSES for x in t]}
        for t in tokens
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"classes={path}"


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def ingested(request, tmp_path_factory):
    """(model config, artifact) of one architecture, ingested on 16 sequences of each slice, every
    direction above float32 noise kept (``energy=1``: the ranks are the maps' own, not a search's)."""
    folder = tmp_path_factory.mktemp(request.param)
    config = {**SMALL, **ARCHITECTURES[request.param]}
    data = [class_slice(folder / "classes.jsonl")] if "d_vocab_out" in config else ["repeated", "random"]
    return config, ingest_native(folder, data, IngestConfig(n_seq=16, energy=1.0), **config)


def stage(name: str, parallel: bool) -> float:
    """Where a channel sits in the forward pass, from its name alone: embeddings first, then per layer
    its heads and (after them, or beside them in a parallel block) its MLP, the unembedding last."""
    if name in ("embed", "pos_embed"):
        return 0
    if name == "unembed":
        return math.inf
    layer = int(name[1 : name.index("H") if "H" in name else name.index(".")])
    return 2 * layer + 1 + (name.endswith(".mlp") and not parallel)


def test_blocks_are_the_architectures_channels(ingested):
    config, artifact = ingested
    blocks = artifact.tables["blocks"]
    L, H = config["n_layers"], config["n_heads"]
    heads = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    mlps = [] if config.get("attn_only") else [f"L{l}.mlp" for l in range(L)]
    positions = [] if config.get("positional_embedding_type") == "rotary" else ["pos_embed"]
    assert sorted(blocks["name"]) == sorted(["embed", *positions, *heads, *mlps, "unembed"])
    assert list(blocks["order"]) == list(range(len(blocks)))
    assert (blocks["kind"] == "mlp").sum() == len(mlps)
    manifest = artifact.manifest["model"]
    assert manifest["has_mlp"] == bool(mlps) and (manifest["d_mlp"] == 0) == (not mlps)


def test_every_role_has_a_subspace_and_every_head_reads_and_writes(ingested):
    config, artifact = ingested
    subspaces, bases = artifact.tables["subspaces"], artifact.bases()
    roles = {"attn_head": {"q", "k", "v", "out"}, "mlp": {"in", "out"}, "embed": {"out"}, "pos_embed": {"out"}}
    roles["unembed"] = {"in"}
    for block, kind in zip(artifact.tables["blocks"]["name"], artifact.tables["blocks"]["kind"]):
        mine = subspaces[subspaces["block"] == block]
        assert set(mine["role"]) == roles[kind], block
        for role, rank in zip(mine["role"], mine["rank"]):
            assert bases[f"{block}/{role}"].shape == (config["d_model"], rank)
    heads = subspaces[subspaces["block"].str.contains("H")]
    assert heads.groupby("block")["rank"].max().gt(0).all()  # random heads all do something


def test_edges_are_every_writer_before_every_reader(ingested):
    """One edge row per (writer, reader role) whose writer comes at an earlier stage: none into a
    head of its own layer or earlier, none from a parallel block's heads into its MLP, none touching
    an MLP of an attention-only model."""
    config, artifact = ingested
    parallel = config.get("parallel_attn_mlp", False)
    blocks = artifact.tables["blocks"]
    names = dict(zip(blocks["name"], blocks["kind"]))
    readers = {"attn_head": ("q", "k", "v"), "mlp": ("in",), "unembed": ("in",)}
    expected = {
        (w, r, role)
        for w, kind in names.items()
        if kind != "unembed"
        for r, reader_kind in names.items()
        for role in readers.get(reader_kind, ())
        if stage(w, parallel) < stage(r, parallel)
    }
    for table in ("edges", "slice_edges"):
        edges = artifact.tables[table]
        assert set(zip(edges["writer"], edges["reader"], edges["role"])) == expected, table
    if config.get("attn_only"):
        edges = artifact.tables["edges"]
        assert not (edges["writer"].str.contains("mlp") | edges["reader"].str.contains("mlp")).any()


def test_scores_and_effects_are_finite(ingested):
    _, artifact = ingested
    tables = artifact.tables
    for table, columns in (
        ("edges", ("weight", "strength", "flow", "attribution", "attribution_signed")),
        ("activity", ("attribution", "attribution_signed", "ablation", "mean_norm")),
    ):
        values = torch.tensor(tables[table][list(columns)].to_numpy(dtype=float))
        assert values.isfinite().all(), table
    assert tables["edges"]["weight"].between(0, 1 + 1e-6).all()
    # flow is a share: in [0, 1], summing to 1 over the writers of each role that any writer writes into
    flows = tables["edges"].groupby(["reader", "role"])["flow"]
    assert tables["edges"]["flow"].between(0, 1 + 1e-6).all()
    assert all(total == pytest.approx(1, abs=1e-5) or total == 0 for total in flows.sum()), flows.sum()
    assert (flows.sum() > 0).any()
    patched = tables["edges"]["patched"]  # every edge, or at least the top 64 by attribution of each slice
    assert patched.notna().sum() >= min(64, len(patched)) and patched.abs().max() > 0
    assert tables["activity"]["ablation"].abs().max() > 0  # ablating some channel changes the loss
    assert set(tables["examples"]["block"]) <= set(tables["blocks"]["name"])
    fidelity = artifact.manifest["fidelity"]
    assert math.isfinite(fidelity["loss_clean"]) and set(fidelity["mean_ranks"]) >= {"qk", "ov", "unembed"}
    assert ("mlp_in" in fidelity["mean_ranks"]) == artifact.manifest["model"]["has_mlp"]


def test_a_property_of_the_architecture(ingested):
    """LayerNorm: every write subspace is orthogonal to the all-ones direction (every reader centres
    its input, so no gradient has a component along it). Grouped keys and values: the heads sharing
    one K (V) read inside that one d_head-dimensional span. Output classes: the unembedding reads
    CLASSES - 1 directions and no more (the softmax ignores a shift shared by the classes)."""
    config, artifact = ingested
    bases, blocks = artifact.bases(), artifact.tables["blocks"]
    if config["normalization_type"] in ("LN", "LNPre"):
        ones = torch.ones(config["d_model"]) / config["d_model"] ** 0.5
        for name in blocks["name"][blocks["kind"] != "unembed"]:
            assert (ones @ bases[f"{name}/out"]).abs().max() < 1e-4, name
    if "n_key_value_heads" in config:
        group = config["n_heads"] // config["n_key_value_heads"]
        for l in range(config["n_layers"]):
            for first in range(0, config["n_heads"], group):
                for role in ("k", "v"):
                    shared = torch.cat([bases[f"L{l}H{h}/{role}"] for h in range(first, first + group)], dim=1)
                    assert torch.linalg.matrix_rank(shared, atol=1e-4) <= config["d_head"]
                    assert shared.shape[1] > config["d_head"]  # more columns than one span holds: a real check
    if "d_vocab_out" in config:
        subspaces = artifact.tables["subspaces"]
        [sigma] = subspaces["singular_values"][subspaces["block"] == "unembed"]
        assert min(sigma[: CLASSES - 1]) > 1e-3 and max(sigma[CLASSES - 1 :]) < 1e-6 * sigma[0]
