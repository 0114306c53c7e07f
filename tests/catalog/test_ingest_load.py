"""ingest -> artifact -> Neo4j, against the real server: completeness, idempotence, bad inputs."""

import numpy as np
import pytest
import torch
from builders import ingest_native, random_gpt2
from click.testing import CliRunner
from snapshots import graph_snapshot

from circuit_atlas import queries
from circuit_atlas.cli import cli
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.loader import load_artifact
from circuit_atlas.local_server import free_port

COUNT_QUERY = """
MATCH (c:Checkpoint {id: $id})
OPTIONAL MATCH (c)-[:HAS_BLOCK]->(b:Block)
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
RETURN c.status AS status, count(DISTINCT b) AS blocks, count(DISTINCT s) AS subspaces,
       COUNT { (:Subspace {checkpoint_id: $id})-[:FEEDS]->() } AS feeds,
       COUNT { (:Subspace {checkpoint_id: $id})-[:FLOWS_ON]->() } AS flows,
       COUNT { (:Block {checkpoint_id: $id})-[:ACTIVE_ON]->() } AS active
"""


@pytest.fixture(scope="module")
def reference_artifact(reference_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    result = CliRunner().invoke(
        cli,
        [
            "ingest",
            str(reference_checkpoints[-1]),
            "--data",
            "repeated",
            "--data",
            "random",
            "--out",
            str(out),
            "--n-seq",
            "64",
            "--ablation",
            "mean",
            "--baseline",
            "random",  # as ACDC corrupts induction: every slice's channels ablated to random data's
        ],
    )
    assert result.exit_code == 0, result.output
    [path] = [p for p in out.iterdir() if not p.name.startswith(".")]
    return path


def test_ingest_writes_an_artifact_and_load_makes_a_complete_checkpoint(
    migrated, neo4j_settings, cli_env, reference_artifact
):
    artifact = read_artifact(reference_artifact)
    result = CliRunner().invoke(cli, ["load", str(reference_artifact)], env=cli_env)
    assert result.exit_code == 0, result.output
    checkpoint_id = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
    [row] = migrated.execute_query(COUNT_QUERY, id=checkpoint_id, database_=neo4j_settings.database).records
    tables = artifact.tables
    assert row["status"] == "complete"
    assert row["blocks"] == len(tables["blocks"]) == 8  # embed, 2 x (2 heads + MLP), unembed
    assert row["subspaces"] == len(tables["subspaces"])
    assert 0 < row["feeds"] <= len(tables["edges"])
    n_slices = len(artifact.manifest["slices"])  # repeated, random and the ingest data (their union)
    assert n_slices == 3 and row["flows"] == n_slices * row["feeds"]
    assert row["active"] == n_slices * row["blocks"]
    baselines = migrated.execute_query(
        "MATCH (:Block {checkpoint_id: $id})-[a:ACTIVE_ON]->(d:DataSlice) RETURN DISTINCT d.name AS slice, "
        "a.ablation_baseline AS baseline",
        id=checkpoint_id,
        database_=neo4j_settings.database,
    ).records
    assert {r["slice"]: r["baseline"] for r in baselines} == {
        "repeated": "mean of random",
        "random": "mean of random",
        "repeated+random": "as each slice",
    }
    assert artifact.manifest["config"]["ablation"] == "mean" and artifact.manifest["config"]["baseline"] == "random"
    [errors] = migrated.execute_query(
        "MATCH (:Block {checkpoint_id: $id})-[a:ACTIVE_ON]->() RETURN collect(a.ablation_se) AS se",
        id=checkpoint_id,
        database_=neo4j_settings.database,
    ).records
    expected = artifact.tables["activity"]["ablation_se"]
    assert sorted(errors["se"]) == pytest.approx(sorted(expected)) and (expected > 0).all()
    kinds = migrated.execute_query(
        "MATCH (b:Block {checkpoint_id: $id}) RETURN b.kind AS kind, labels(b) AS labels",
        id=checkpoint_id,
        database_=neo4j_settings.database,
    ).records
    assert {(r["kind"], tuple(sorted(r["labels"]))) for r in kinds} == {
        ("embed", ("Block", "Embedding")),
        ("attn_head", ("AttentionHead", "Block")),
        ("mlp", ("Block", "MLP")),
        ("unembed", ("Block", "Unembedding")),
    }
    bases = artifact.bases()
    for _key, basis in bases.items():
        if basis.shape[1]:
            torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1]), atol=1e-4, rtol=0)


def test_loading_the_same_artifact_twice_gives_the_same_graph(migrated, neo4j_settings, cli_env, reference_artifact):
    runner = CliRunner()
    assert runner.invoke(cli, ["load", str(reference_artifact)], env=cli_env).exit_code == 0
    first = graph_snapshot(migrated, neo4j_settings.database)
    assert runner.invoke(cli, ["load", str(reference_artifact)], env=cli_env).exit_code == 0
    assert graph_snapshot(migrated, neo4j_settings.database) == first


def test_an_attention_only_model_loads_and_its_circuit_and_components_are_of_its_heads(
    migrated, neo4j_settings, tmp_path
):
    shape = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20)
    artifact = ingest_native(tmp_path, ["repeated", "random"], IngestConfig(n_seq=16), attn_only=True, **shape)
    db = neo4j_settings.database
    load_artifact(migrated, db, artifact.path, echo=lambda _: None)
    library = queries.library()

    def run(name, **params):
        return queries.run(migrated, db, library[name], library[name].check(params))

    checkpoint = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
    names = list(artifact.tables["blocks"]["name"])  # channel order
    assert len(names) == 11 and not any(".mlp" in n for n in names)  # embeddings, 8 heads, unembedding
    assert migrated.execute_query("MATCH (b:MLP) RETURN count(b) AS n", database_=db).records[0]["n"] == 0

    activity = artifact.tables["activity"]
    effects = activity[activity["slice"] == "repeated"].set_index("block")["ablation"]
    least = effects.nlargest(4).min()  # the circuit of the four channels that matter most
    circuit = run("circuit", checkpoint=checkpoint, slice="repeated", min_effect=float(least), min_attribution=0.0)
    members = [n for n in names if effects[n] >= least]
    assert list(dict.fromkeys(r["writer"] for r in circuit)) == members
    assert {r["reader"] for r in circuit} <= {*members, None} and any(r["reader"] for r in circuit)

    components = run("components", checkpoint=checkpoint, by="weight", min_share=0.5)
    assert sorted(n for r in components for n in r["channels"]) == sorted(names)  # each channel in one
    assert sum(r["size"] for r in components) == len(names) and max(r["size"] for r in components) > 1


def _no_model_nodes(driver, database):
    """Nothing in the catalog but its schema history and the publish lock a migration creates."""
    query = "MATCH (n) WHERE NOT n:SchemaMigration AND NOT n:PublishLock RETURN count(n) AS n"
    return driver.execute_query(query, database_=database).records[0]["n"] == 0


def _overflowing_mlp(folder):
    from safetensors.torch import load_file, save_file

    weights_file = next(folder.glob("*.safetensors"))
    weights = load_file(weights_file)
    w_in = weights["transformer.h.0.mlp.c_fc.weight"]  # finite weights whose MLP pre-activations overflow
    weights["transformer.h.0.mlp.c_fc.weight"] = (
        torch.randn(w_in.shape, generator=torch.Generator().manual_seed(0)).sign() * 1e38
    )
    save_file(weights, weights_file, metadata={"format": "pt"})
    return folder


BAD_INPUTS = {
    "unknown model name": (lambda tmp: "no-such-org/no-such-model", ["--data", "random"], "Could not load model"),
    "directory without weights": (
        lambda tmp: [p.unlink() for p in random_gpt2(tmp / "m").glob("*.safetensors")] and str(tmp / "m"),
        ["--data", "random"],
        "no weights",
    ),
    "empty data": (
        lambda tmp: np.save(tmp / "empty.npy", np.zeros((0, 8), dtype=np.int64)) or str(random_gpt2(tmp / "m")),
        ["--data", "{tmp}/empty.npy"],
        "is empty",
    ),
    "slice longer than the context": (
        lambda tmp: str(random_gpt2(tmp / "m")),
        ["--data", "random", "--seq-len", "64"],
        "context of 16",
    ),
    "inf in activations": (
        lambda tmp: str(_overflowing_mlp(random_gpt2(tmp / "m"))),
        ["--data", "random", "--seq-len", "8"],
        "NaN or inf activations",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_clear_errors_and_write_nothing(case, migrated, neo4j_settings, cli_env, tmp_path):
    make_model, data_args, message = BAD_INPUTS[case]
    model = make_model(tmp_path)
    out = tmp_path / "out"
    args = ["ingest", model, *[a.format(tmp=tmp_path) for a in data_args], "--out", str(out), "--load", "--n-seq", "8"]
    result = CliRunner().invoke(cli, args, env=cli_env)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
    assert _no_model_nodes(migrated, neo4j_settings.database)


def test_ingest_with_load_checks_the_catalog_before_computing(empty_catalog, neo4j_settings, cli_env, tmp_path):
    model = str(random_gpt2(tmp_path / "m"))
    args = ["ingest", model, "--data", "random", "--out", str(tmp_path / "out"), "--load", "--n-seq", "8"]
    outdated = CliRunner().invoke(cli, args, env=cli_env)  # empty catalog: schema never migrated
    assert outdated.exit_code == 1 and "circuit-atlas schema migrate" in outdated.output
    down = CliRunner().invoke(cli, args, env={**cli_env, "NEO4J_URI": f"bolt://127.0.0.1:{free_port()}"})
    assert down.exit_code == 1 and "No Neo4j server answers" in down.output
    assert not (tmp_path / "out").exists()


def test_load_reads_an_fsspec_url_through_its_local_mirror(
    migrated, neo4j_settings, cli_env, reference_artifact, tmp_path
):
    """An artifact uploaded to a URL (fsspec's in-memory store) loads as its folder does; only the bases'
    address differs, pointing into the URL's local mirror, where the bases are."""
    import json
    import secrets
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    from circuit_atlas.ingest.storage import upload

    url = f"memory://catalog-{secrets.token_hex(4)}/run"
    upload(Path(reference_artifact), url)
    runner = CliRunner()
    loaded = runner.invoke(cli, ["load", url], env={**cli_env, "CIRCUIT_ATLAS_CACHE": str(tmp_path / "cache")})
    assert loaded.exit_code == 0, loaded.output
    uris = [r["u"] for r in migrated.execute_query("MATCH (s:Subspace) RETURN s.basis_uri AS u").records]
    assert uris and all(unquote(urlparse(u).path).startswith(str(tmp_path / "cache")) for u in uris)
    assert Path(unquote(urlparse(uris[0]).path)).is_file()

    def without_bases_address(snapshot):
        nodes, rels = snapshot
        parsed = [json.loads(line) for line in nodes]
        return sorted(
            json.dumps([labels, {k: v for k, v in p.items() if k != "basis_uri"}]) for labels, p in parsed
        ), rels

    from_url = without_bases_address(graph_snapshot(migrated, neo4j_settings.database))
    assert runner.invoke(cli, ["load", str(reference_artifact)], env=cli_env).exit_code == 0
    assert without_bases_address(graph_snapshot(migrated, neo4j_settings.database)) == from_url
