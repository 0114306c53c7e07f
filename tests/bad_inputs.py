"""The bad inputs of the README's table: each a command line, the files it needs, and the words of
the one line it must print. ``tests/catalog/test_bad_inputs.py`` runs every one against the real
server and checks that it wrote nothing; ``tests/fast/test_readme.py`` checks the README lists them.

In ``args``, ``{tmp}`` is the test's folder, ``{model}`` a tiny GPT-2 directory, ``{artifact}`` a
whole artifact of checkpoint ``m@1`` (``prepare`` may damage it before the command runs).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from synthetic_artifacts import rehash

from circuit_atlas.ingest.artifact import schema


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    message: str  # words the one error line contains
    prepare: Callable[[Path, object, str], None] | None = None  # (tmp, driver, database)


def _edit_table(table: str, edit: Callable[[pd.DataFrame], pd.DataFrame]):
    def prepare(tmp: Path, driver, database: str) -> None:
        artifact = tmp / "artifact"
        frame = pd.read_parquet(artifact / f"{table}.parquet")
        edited = edit(frame)
        edited.to_parquet(artifact / f"{table}.parquet", index=False, schema=schema(table) if table else None)
        rehash(artifact, f"{table}.parquet")

    return prepare


def _set_column(table: str, column: str, value: float):
    """Every row's ``column`` set to ``value`` (NaN stays a float, as a hand edit with pyarrow leaves it)."""

    def prepare(tmp: Path, driver, database: str) -> None:
        path = tmp / "artifact" / f"{table}.parquet"
        frame = pq.read_table(path)
        index = frame.schema.get_field_index(column)
        values = pa.array([value] * len(frame), type=pa.float64(), from_pandas=False)
        pq.write_table(frame.set_column(index, frame.schema.field(index), values), path)
        rehash(tmp / "artifact", f"{table}.parquet")

    return prepare


def _drop_column(table: str, column: str):
    def prepare(tmp: Path, driver, database: str) -> None:
        artifact = tmp / "artifact"
        pd.read_parquet(artifact / f"{table}.parquet").drop(columns=[column]).to_parquet(
            artifact / f"{table}.parquet", index=False
        )
        rehash(artifact, f"{table}.parquet")

    return prepare


def _write(relative: str, content: bytes):
    def prepare(tmp: Path, driver, database: str) -> None:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_bytes(content)

    return prepare


def _manifest_without(key: str):
    def prepare(tmp: Path, driver, database: str) -> None:
        manifest = json.loads((tmp / "artifact" / "manifest.json").read_text())
        del manifest[key]
        (tmp / "artifact" / "manifest.json").write_text(json.dumps(manifest))

    return prepare


def _manifest_edit(edit: Callable[[dict], None]):
    def prepare(tmp: Path, driver, database: str) -> None:
        manifest = json.loads((tmp / "artifact" / "manifest.json").read_text())
        edit(manifest)
        (tmp / "artifact" / "manifest.json").write_text(json.dumps(manifest))

    return prepare


def _object_npy(tmp: Path, driver, database: str) -> None:
    np.save(tmp / "objects.npy", np.array([{"token": 1}], dtype=object))


def _weights(damage: Callable[[bytes], bytes]):
    def prepare(tmp: Path, driver, database: str) -> None:
        [weights] = (tmp / "model").glob("*.safetensors")
        weights.write_bytes(damage(weights.read_bytes()))

    return prepare


def _second_artifact_damaged(tmp: Path, driver, database: str) -> None:
    """Two artifacts of checkpoints m@8 and m@9, the second damaged: m@8 must not be loaded either."""
    for label in ("8", "9"):
        copy = shutil.copytree(tmp / "artifact", tmp / "two" / label)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["checkpoint"] = {**manifest["checkpoint"], "label": label, "step": int(label)}
        (copy / "manifest.json").write_text(json.dumps(manifest))
    (tmp / "two" / "9" / "edges.parquet").write_bytes(b"damaged")


def _older_schema(tmp: Path, driver, database: str) -> None:
    driver.execute_query(
        "MATCH (m:SchemaMigration) WITH max(m.version) AS last MATCH (m:SchemaMigration {version: last}) DELETE m",
        database_=database,
    )


INGEST = ("ingest", "{model}", "--data", "random", "--out", "{tmp}/out", "--n-seq", "8")
INGEST_TASK = (*INGEST[:3], "{tmp}/task.jsonl", *INGEST[4:])


def _task(row: str):
    """A task file of one prompt, ``row`` (JSON text) after three prompt tokens."""
    return _write("task.jsonl", ('{"tokens": [1, 2, 3], ' + row + "}\n").encode())


EXPORT = ("export", "m@1", "rep")

CASES: dict[str, Case] = {
    "ingest --seq-len 0": Case((*INGEST, "--seq-len", "0"), "--seq-len must be a whole number >= 2"),
    "ingest --seq-len -5": Case((*INGEST, "--seq-len", "-5"), "--seq-len must be a whole number >= 2"),
    "ingest --n-seq -1": Case((*INGEST, "--n-seq", "-1"), "--n-seq must be a whole number >= 2"),
    "ingest --holdout -0.5": Case((*INGEST, "--holdout", "-0.5"), "--holdout must be a number strictly between 0"),
    "ingest --fidelity 2": Case((*INGEST, "--fidelity", "2"), "--fidelity must be a number in (0, 1]"),
    "ingest --energy 2": Case((*INGEST, "--energy", "2"), "--energy must be a number in (0, 1]"),
    "ingest --energy -1": Case((*INGEST, "--energy", "-1"), "--energy must be a number in (0, 1]"),
    "ingest --max-rank 0": Case((*INGEST, "--max-rank", "0"), "--max-rank must be a whole number >= 1"),
    "ingest --max-rank -1": Case((*INGEST, "--max-rank", "-1"), "--max-rank must be a whole number >= 1"),
    "ingest --device foo": Case((*INGEST, "--device", "foo"), "--device 'foo' is not a device"),
    "ingest --load --top-k 0": Case((*INGEST, "--load", "--top-k", "0"), "--top-k must be a whole number of edges"),
    "ingest --out /proc/x": Case(
        (*INGEST[:5], "/proc/circuit-atlas-out", *INGEST[6:]), "--out /proc/circuit-atlas-out cannot be written"
    ),
    "ingest --ablation counterfactual on random tokens": Case(
        (*INGEST, "--ablation", "counterfactual"), "every slice needs counterfactual_tokens"
    ),
    "ingest task: a counterfactual of another length": Case(
        INGEST_TASK, "its counterfactual prompt has 2 tokens and the prompt 3", _task('"counterfactual_tokens": [4, 5]')
    ),
    "ingest --baseline nope": Case((*INGEST, "--baseline", "nope"), "--baseline 'nope' is not a --data slice"),
    "ingest MODEL_DIR --checkpoint a/missing/folder": Case(
        (*INGEST, "--checkpoint", "{tmp}/missing/folder"), "no such folder. "
    ),
    "ingest MODEL_DIR --weights w.pt": Case(
        (*INGEST, "--weights", "{tmp}/w.pt"), "--weights goes with a TransformerLens config JSON", _write("w.pt", b"x")
    ),
    "ingest task: answer -5": Case(
        INGEST_TASK,
        "answer must be a token id (an integer >= 0)",
        _task('"metric": "answer_loss", "position": -1, "answer": -5'),
    ),
    "ingest task: label -2": Case(
        INGEST_TASK,
        "label must be a token id (an integer >= 0)",
        _task('"metric": "label_loss", "position": -1, "label": -2'),
    ),
    "ingest task: counterfactual null": Case(
        INGEST_TASK,
        "counterfactual must be a token id",
        _task('"metric": "logit_diff", "position": -1, "answer": 1, "counterfactual": null'),
    ),
    "ingest task: position []": Case(
        INGEST_TASK, "'position' lists no position", _task('"metric": "answer_loss", "position": [], "answer": []')
    ),
    "ingest task: a boolean answer": Case(
        INGEST_TASK, "answer must be a token id", _task('"metric": "answer_loss", "position": -1, "answer": true')
    ),
    "ingest task: token id 10**30": Case(
        (*INGEST[:3], "{tmp}/task.jsonl", *INGEST[4:]),
        "'tokens' must be a list of token ids (integers >= 0)",
        _write("task.jsonl", b'{"tokens": [1, 1000000000000000000000000000000]}\n'),
    ),
    "ingest task: 'metric' a list": Case(
        INGEST_TASK,
        "'metric' must be one metric's name",
        _task('"metric": ["answer_loss"], "position": -1, "answer": 1'),
    ),
    "ingest task: not UTF-8": Case(INGEST_TASK, "is not UTF-8 text", _write("task.jsonl", b'{"text": "\xff\xfe"}\n')),
    "ingest a truncated safetensors file": Case(
        INGEST, "cannot be read", _weights(lambda data: data[: len(data) // 2])
    ),
    "ingest a garbage weights file": Case(INGEST, "cannot be read", _weights(lambda data: b"garbage" * 100)),
    "ingest --data objects.npy (object array)": Case(
        (*INGEST[:3], "{tmp}/objects.npy", *INGEST[4:]), "is not a NumPy .npy array", _object_npy
    ),
    "ingest --data garbage.npy": Case(
        (*INGEST[:3], "{tmp}/garbage.npy", *INGEST[4:]),
        "is not a NumPy .npy array",
        _write("garbage.npy", b"\x00garbage" * 10),
    ),
    "ingest --data garbage.pt": Case(
        (*INGEST[:3], "{tmp}/garbage.pt", *INGEST[4:]),
        "is not a torch tensor of token ids",
        _write("garbage.pt", b"not a torch file" * 10),
    ),
    "load: manifest that is not JSON": Case(
        ("load", "{artifact}"), "is not valid JSON", _write("artifact/manifest.json", b"{not json")
    ),
    "load: manifest without files": Case(("load", "{artifact}"), "lacks files", _manifest_without("files")),
    "load: a parquet that does not parse": Case(
        ("load", "{artifact}"),
        "is not readable Parquet",
        lambda tmp, driver, db: (
            (tmp / "artifact" / "edges.parquet").write_bytes(b"PAR1 damaged PAR1"),
            rehash(tmp / "artifact", "edges.parquet"),
        ),
    ),
    "load: a missing column": Case(
        ("load", "{artifact}"), "not those of artifact format", _drop_column("edges", "flow")
    ),
    "load: an edge naming an unknown block": Case(
        ("load", "{artifact}"),
        "edges.writer names block 'Z'",
        _edit_table("edges", lambda f: f.assign(writer=["Z"] * len(f))),
    ),
    "load: a NaN attribution": Case(
        ("load", "{artifact}"),
        "edges.attribution holds nan, not a finite number >= 0",
        _set_column("edges", "attribution", float("nan")),
    ),
    "load: a negative attribution": Case(
        ("load", "{artifact}"),
        "slice_edges.attribution holds -1.0, not a finite number >= 0",
        _set_column("slice_edges", "attribution", -1.0),
    ),
    "load: an infinite weight": Case(
        ("load", "{artifact}"),
        "edges.weight holds inf, not a finite number >= 0",
        _set_column("edges", "weight", float("inf")),
    ),
    "load: an edge row given twice": Case(
        ("load", "{artifact}"), "twice", _edit_table("edges", lambda f: pd.concat([f, f.head(1)], ignore_index=True))
    ),
    "load: a text fidelity": Case(
        ("load", "{artifact}"),
        "fidelity.loss_recovered '0.9', not int or float",
        _manifest_edit(lambda m: m["fidelity"].update(loss_recovered="0.9")),
    ),
    "load: tokens_seen as text": Case(
        ("load", "{artifact}"),
        "checkpoint.tokens_seen '10', not int",
        _manifest_edit(lambda m: m["checkpoint"].update(tokens_seen="10")),
    ),
    "load: an empty fingerprint feature name": Case(
        ("load", "{artifact}"),
        "fingerprint_features ['prev_token', ''",
        _manifest_edit(lambda m: m.update(fingerprint_features=["prev_token", ""])),
    ),
    "load: the second of two artifacts damaged": Case(
        ("load", "{tmp}/two"), "does not match its hash", _second_artifact_damaged
    ),
    "load --top-k -1": Case(("load", "{artifact}", "--top-k", "-1"), "--top-k must be a whole number of edges"),
    "load --top-k 0": Case(("load", "{artifact}", "--top-k", "0"), "--top-k must be a whole number of edges"),
    "load --min-attribution -1": Case(
        ("load", "{artifact}", "--min-attribution", "-1"), "--min-attribution must be a finite number >= 0"
    ),
    "query top_edges -p by=nonsense": Case(
        ("query", "top_edges", "-p", "checkpoint=m@1", "-p", "by=nonsense", "-p", "limit=3"),
        "$by must be one of 'weight', 'flow', 'attribution'",
    ),
    "query top_edges -p limit=99999999999999999999": Case(
        ("query", "top_edges", "-p", "checkpoint=m@1", "-p", "by=flow", "-p", "limit=99999999999999999999"),
        "$limit must be an integer >= 1",
    ),
    "query top_edges -p limit=0": Case(
        ("query", "top_edges", "-p", "checkpoint=m@1", "-p", "by=flow", "-p", "limit=0"),
        "$limit must be an integer >= 1",
    ),
    "query components -p min_share=abc": Case(
        ("query", "components", "-p", "checkpoint=m@1", "-p", "min_share=abc"),
        "$min_share must be a finite number in [0, 1]",
    ),
    "query circuit -p min_effect=abc": Case(
        (
            "query",
            "circuit",
            "-p",
            "checkpoint=m@1",
            "-p",
            "slice=rep",
            "-p",
            "min_effect=abc",
            "-p",
            "min_attribution=0",
        ),
        "$min_effect must be a finite number",
    ),
    "query checkpoints -p limit=3 (no such parameter)": Case(
        ("query", "checkpoints", "-p", "limit=3"), "has no parameter $limit"
    ),
    "query on a catalog of an older schema": Case(
        ("query", "catalog_overview"), "schema is out of date", _older_schema
    ),
    "export -o a path under a file": Case(
        (*EXPORT, "-o", "{tmp}/a-file/circuit.svg"), "cannot be written", _write("a-file", b"")
    ),
    "export -o a name of 300 characters": Case(
        (*EXPORT, "-o", "{tmp}/" + "c" * 296 + ".svg"), "bytes, over this file system's 255"
    ),
    "export -o a.json -o /proc/x.png": Case(
        (*EXPORT, "-o", "{tmp}/a.json", "-o", "/proc/circuit-atlas.png"), "-o /proc/circuit-atlas.png cannot be written"
    ),
    "export -o circuit.txt": Case(
        (*EXPORT, "-o", "{tmp}/circuit.txt"), "name files ending in .json, .graphml, .svg, .png"
    ),
    "compare with a reference file that is missing": Case(
        ("compare", "m@1", "rep", "{tmp}/missing.json"), "Cannot read the reference circuit"
    ),
    "timeline --plot t.pdf": Case(
        ("timeline", "m", "A", "--plot", "{tmp}/t.pdf"), "name a file ending in .svg or .png"
    ),
    "export --min-effect nan": Case((*EXPORT, "-o", "{tmp}/c.svg", "--min-effect", "nan"), "$min_effect must be"),
    "export on a catalog of an older schema": Case(
        (*EXPORT, "-o", "{tmp}/c.svg"), "schema is out of date", _older_schema
    ),
    "--uri http://127.0.0.1:7474": Case(
        ("query", "catalog_overview", "--uri", "http://127.0.0.1:7474"), "Invalid Neo4j URI"
    ),
    "--database system": Case(("query", "catalog_overview", "--database", "system"), "administration database"),
    "--uri 'not a uri'": Case(("query", "catalog_overview", "--uri", "not a uri"), "Invalid Neo4j URI"),
    "neo4j start --bolt-port 70000": Case(
        ("neo4j", "start", "--dir", "{tmp}/server", "--bolt-port", "70000"), "70000 is not in the range 1<=x<=65535"
    ),
    "neo4j start --heap lots": Case(
        ("neo4j", "start", "--dir", "{tmp}/server", "--heap", "lots"), "--heap must be a memory size"
    ),
    "reference train --steps 0": Case(
        ("reference", "train", "--out", "{tmp}/reference", "--steps", "0"), "0 is not in the range x>=1"
    ),
    "reference train --steps -1": Case(
        ("reference", "train", "--out", "{tmp}/reference", "--steps", "-1"), "-1 is not in the range x>=1"
    ),
}
