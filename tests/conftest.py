"""Shared fixtures: seeds, the report header, tier markers, and the session's real Neo4j server.

Tiers by cost, one folder each (tests/README.md): ``fast`` (no model, no database), ``model``
(boots small real models), ``catalog`` (the real Neo4j server), ``gpu`` (a CUDA device).

The Neo4j server comes from, in order: ``NEO4J_URI`` (+ ``NEO4J_USER``/``NEO4J_PASSWORD``) if set;
else testcontainers' Neo4j container if a Docker engine answers; else the project's local
runtime (Neo4j Community assembled from Maven Central), started in a temporary folder on free
ports and stopped at the end. There is no fake: every integration test talks to a real server.
"""

from __future__ import annotations

import os

# The tests never reach a model hub (these machines cannot): fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from empty_database import empty_database

from circuit_atlas.connection import Neo4jSettings, open_driver, server_version
from circuit_atlas.local_server import Distribution, LocalServer, ServerSettings, free_port

DOCKER_IMAGE = "neo4j:5.26-community"
SERVER_VERSION = pytest.StashKey[str]()


def docker_engine_answers() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:  # no client library, no socket, no engine: all mean "no Docker here"
        return False


def neo4j_provider() -> str:
    if os.environ.get("NEO4J_URI"):
        return "env"
    return "docker" if docker_engine_answers() else "local"


TIER_MARKERS = {"model": "model", "catalog": "neo4j", "gpu": "gpu"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items) -> None:
    """Mark each test with its tier's marker, from the folder it lives in."""
    for item in items:
        folder = Path(str(item.path)).parent.name
        if folder in TIER_MARKERS:
            item.add_marker(getattr(pytest.mark, TIER_MARKERS[folder]))


def pytest_report_header(config) -> list[str]:
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    provider = neo4j_provider()
    if provider == "env":
        neo4j_line = f"neo4j: existing server at {os.environ['NEO4J_URI']}"
    elif provider == "docker":
        neo4j_line = f"neo4j: testcontainers {DOCKER_IMAGE}"
    else:
        dist = Distribution.in_cache()
        state = "installed" if dist.is_installed() else "NOT installed: run `circuit-atlas neo4j install`"
        neo4j_line = f"neo4j: {dist.version} community, local runtime from Maven Central ({dist.root}, {state})"
    return [f"torch: {torch.__version__}, device {device}", neo4j_line]


@pytest.fixture(scope="session")
def reference_checkpoints() -> list:
    """The project's reference induction model, trained once per machine and cached (see README)."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.induction import InductionRecipe, train_induction

    return train_induction(InductionRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)


@pytest.fixture(scope="session")
def keyvalue_checkpoints() -> list:
    """The key-value lookup reference model, trained once per machine and cached like the induction model."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.keyvalue import KeyValueRecipe, train_keyvalue

    return train_keyvalue(KeyValueRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)


@pytest.fixture(scope="session")
def attention_only_checkpoints() -> list:
    """The attention-only induction model (TransformerLens-native: its config beside the weights
    files, which this lists by step), shipped trained and copied into the cache once per machine."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.attention_only import AttentionOnlyRecipe, train_attention_only

    return train_attention_only(AttentionOnlyRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)


@pytest.fixture(scope="session")
def attention_only_artifact(attention_only_checkpoints, tmp_path_factory) -> Path:
    """The attention-only model's final checkpoint ingested on repeated and random tokens (64 each)."""
    from circuit_atlas.ingest.config import IngestConfig
    from circuit_atlas.ingest.pipeline import ingest
    from circuit_atlas.reference.attention_only import NATIVE_CONFIG

    final = attention_only_checkpoints[-1]
    (path,) = ingest(
        str(final.parent / NATIVE_CONFIG),
        [str(final)],
        ["repeated", "random"],
        tmp_path_factory.mktemp("attention-only-final"),
        IngestConfig(n_seq=64),
        "cpu",
        progress=False,
        echo=lambda _: None,
    )
    return path


@pytest.fixture(scope="session")
def one_token_writer(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """The model of :func:`builders.one_token_writer` ingested on random tokens with every write
    direction's steering measured (``--steer``); the artifact and the written token's direction."""
    from builders import one_token_writer

    from circuit_atlas.ingest.config import IngestConfig
    from circuit_atlas.ingest.pipeline import ingest

    folder = tmp_path_factory.mktemp("one-token-writer")
    config, weights, direction = one_token_writer(folder)
    (path,) = ingest(
        str(config),
        [str(weights)],
        ["random"],
        folder / "artifacts",
        IngestConfig(n_seq=32, steer=128),
        "cpu",
        progress=False,
        echo=lambda _: None,
    )
    return path, direction


@pytest.fixture(scope="session")
def modular_addition_checkpoints() -> list:
    """The modular-addition series (TransformerLens-native, 13 checkpoints through memorisation and the
    algorithm's formation), shipped trained and copied into the cache once per machine."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.modular_addition import ModularAdditionRecipe, train_modular_addition

    return train_modular_addition(ModularAdditionRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)


@pytest.fixture(scope="session")
def variant_artifacts(reference_checkpoints, tmp_path_factory) -> dict[str, list[Path]]:
    """The induction recipe's variants (``reference.seeds.VARIANTS``: seeds 0 and 1, and 4 heads per
    layer), trained once per machine, ingested on repeated and random tokens: the reference model's
    checkpoints from step 1000 on (so that MATCHES chain several), the others' final checkpoints."""
    from circuit_atlas.ingest.config import IngestConfig
    from circuit_atlas.ingest.pipeline import ingest
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.seeds import final_checkpoints

    out = tmp_path_factory.mktemp("variants")
    artifacts = {}
    for name, final in final_checkpoints(default_reference_dir()).items():
        steps = (
            [c for c in reference_checkpoints if c.name >= "step-01000"] if final in reference_checkpoints else [final]
        )
        artifacts[name] = ingest(
            str(final),
            [str(c) for c in steps],
            ["repeated", "random"],
            out,
            IngestConfig(n_seq=64),
            "cpu",
            progress=False,
            echo=lambda _: None,
        )
    return artifacts


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@dataclass(frozen=True)
class SessionServer:
    settings: Neo4jSettings
    browser_url: str | None  # Neo4j Browser's address, where known


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory) -> SessionServer:
    """The session's real Neo4j server (started here when needed)."""
    provider = neo4j_provider()
    if provider == "env":
        yield SessionServer(
            Neo4jSettings(
                os.environ["NEO4J_URI"],
                os.environ.get("NEO4J_USER", "neo4j"),
                os.environ["NEO4J_PASSWORD"],
                os.environ.get("NEO4J_DATABASE", "neo4j"),
            ),
            os.environ.get("NEO4J_BROWSER_URL"),
        )
    elif provider == "docker":
        from testcontainers.neo4j import Neo4jContainer

        password = secrets.token_urlsafe(12)
        container = (
            Neo4jContainer(DOCKER_IMAGE, password=password)
            .with_env("NEO4J_PLUGINS", '["apoc", "graph-data-science"]')
            .with_exposed_ports(7474)
        )
        with container:
            browser = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(7474)}/browser/"
            yield SessionServer(Neo4jSettings(container.get_connection_url(), "neo4j", password), browser)
    else:
        server = LocalServer(tmp_path_factory.mktemp("neo4j"), Distribution.in_cache())
        settings = server.start(ServerSettings(bolt_port=free_port(), http_port=free_port()), echo=lambda _: None)
        try:
            yield SessionServer(Neo4jSettings(settings.bolt_uri, "neo4j", server.password()), settings.browser_url)
        finally:
            server.stop()


@pytest.fixture(scope="session")
def neo4j_settings(neo4j_server) -> Neo4jSettings:
    """Connection settings of the session's server."""
    return neo4j_server.settings


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_settings, pytestconfig):
    driver = open_driver(neo4j_settings)
    pytestconfig.stash[SERVER_VERSION] = f"{server_version(driver)} at {neo4j_settings.uri}"
    yield driver
    driver.close()


@pytest.fixture
def empty_catalog(neo4j_driver, neo4j_settings):
    """The session's database with no data, constraints or indexes: every test starts from here."""
    empty_database(neo4j_driver, neo4j_settings.database)
    return neo4j_driver


def pytest_terminal_summary(terminalreporter) -> None:
    version = terminalreporter.config.stash.get(SERVER_VERSION, None)
    if version is not None:
        terminalreporter.write_line(f"neo4j server used: {version}")
