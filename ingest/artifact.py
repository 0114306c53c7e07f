"""The artifact directory: what the compute step hands to the load step, and its one schema.

One self-describing directory per (model, checkpoint, slices, config)::

    manifest.json        the keys of MANIFEST_KEYS, the format version and the SHA-256 of every
                         other file
    <table>.parquet      one file per table of TABLES, exactly the columns listed there
    bases.safetensors    "<block>/<role>" -> float32 [d_model, rank], orthonormal columns

:data:`TABLES` is the only definition of the tables and their columns: :func:`write_artifact`
refuses a frame whose columns differ from it, :func:`read_artifact` refuses a file that does,
and the loader reads columns by these names. Any change to it, or to what a column means (format 9:
subspace similarities count beyond chance; 10: write directions' output tokens; 11: their steering),
bumps :data:`FORMAT_VERSION`.

An artifact is written under a hidden temporary name (``.<name>.partial-<host>-<pid>``) and
renamed when complete, so a directory that exists is whole; the next write into the same folder
removes the temporary folders of writers on this host that no longer run. :func:`read_artifact`
checks every hash, every table's columns, and that every row names a block, role and slice the
artifact has, before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from circuit_atlas.errors import UserError
from circuit_atlas.processes import process_is_gone

FORMAT_VERSION = 11
BASES = "bases.safetensors"
MANIFEST = "manifest.json"

_STR, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
_INTS, _FLOATS, _STRS = pa.list_(pa.int64()), pa.list_(pa.float64()), pa.list_(pa.string())


PATCHED = "exact metric change from ablating the writer in this reader role's input only (nats; null: not patched)"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = False


#: Every table of an artifact, its columns in order, their types and meaning.
TABLES: dict[str, tuple[Column, ...]] = {
    "blocks": (
        Column("name", _STR, "channel name: embed, pos_embed, L{l}H{h}, L{l}.mlp, unembed"),
        Column("order", _INT, "position in the channel order (forward order)"),
        Column("kind", _STR, "embed | pos_embed | attn_head | mlp | unembed"),
        Column("layer", _INT, "-1 for embeddings, n_layers for the unembedding"),
        Column("head", _INT, "head index (attention heads only)", nullable=True),
        Column("fidelity", _FLOAT, "loss recovered with this channel alone compressed", nullable=True),
        Column("fingerprint", _FLOATS, "behaviour fingerprint (manifest 'fingerprint_features' names it)"),
        Column("previous_token", _FLOAT, "attention to the previous token on repeat probes", nullable=True),
        Column("induction", _FLOAT, "attention to the token after an earlier copy", nullable=True),
        Column("duplicate_token", _FLOAT, "attention to an earlier copy of the token", nullable=True),
        Column("first_token", _FLOAT, "attention to position 0", nullable=True),
        Column("self", _FLOAT, "attention to the query's own position", nullable=True),
        Column("attention_entropy", _FLOAT, "pattern entropy over visible keys / log(visible)", nullable=True),
        Column("lineage_start", _STR, "label of the checkpoint where the channel's lineage starts (matching.py)"),
        Column("lineage_similarity", _FLOAT, "its similarity to the channel at that start (1 at the start)"),
    ),
    "subspaces": (
        Column("block", _STR, "channel name"),
        Column("role", _STR, "q | k | v | in | out"),
        Column("rank", _INT, "kept dimensions"),
        Column("energy", _FLOAT, "share of the squared importances the rank keeps (its coverage)"),
        Column("singular_values", _FLOATS, "every importance, descending"),
        Column("basis_key", _STR, "key of the basis in bases.safetensors"),
        Column("similarity_to_first", _FLOAT, "to the same subspace at the series' first checkpoint", nullable=True),
        Column("similarity_to_last", _FLOAT, "to the same subspace at the series' last checkpoint", nullable=True),
        Column("promoted_tokens", _INTS, "out: per direction the 5 tokens it raises most, directly (else empty)"),
        Column("suppressed_tokens", _INTS, "out: per direction the 5 tokens it lowers most, directly (else empty)"),
        Column("promoted_text", _STRS, "their text (empty without a tokenizer)"),
        Column("suppressed_text", _STRS, "their text (empty without a tokenizer)"),
    ),
    "edges": (
        Column("writer", _STR, "writing channel"),
        Column("reader", _STR, "reading channel"),
        Column("role", _STR, "the reader's read role"),
        Column("weight", _FLOAT, "normalised composition of the subspaces, in [0, 1]"),
        Column("strength", _FLOAT, "the same in importance units"),
        Column("flow", _FLOAT, "the writer's share of what the writers put in the reader's read subspace, in [0, 1]"),
        Column("attribution", _FLOAT, "mean |first-order effect| per sequence on the ingest data (nats)"),
        Column("attribution_signed", _FLOAT, "its signed mean"),
        Column("patched", _FLOAT, PATCHED, nullable=True),
    ),
    "slice_edges": (
        Column("slice", _STR, "slice name"),
        Column("writer", _STR, "writing channel"),
        Column("reader", _STR, "reading channel"),
        Column("role", _STR, "the reader's read role"),
        Column("attribution", _FLOAT, "mean |first-order effect| per sequence on the slice"),
        Column("attribution_signed", _FLOAT, "its signed mean"),
        Column("patched", _FLOAT, PATCHED, nullable=True),
    ),
    "activity": (
        Column("slice", _STR, "slice name"),
        Column("block", _STR, "channel name"),
        Column("attribution", _FLOAT, "mean |first-order effect of mean-ablating the channel| per sequence"),
        Column("attribution_signed", _FLOAT, "its signed mean (negative: the channel helps)"),
        Column(
            "ablation", _FLOAT, "exact metric change from ablating the channel to its baseline (positive: it helps)"
        ),
        Column("ablation_se", _FLOAT, "the standard error of ablation over the sequences sampled", nullable=True),
        Column("effect_rank", _INT, "rank by ablation on the slice (1 = largest effect, ties in channel order)"),
        Column(
            "faithfulness",
            _FLOAT,
            "share of the behaviour kept by the channels ranked up to this one, all others ablated",
            nullable=True,
        ),
        Column("mean_norm", _FLOAT, "mean norm of the channel's output (the unembedding: its input)"),
        Column("in_circuit", pa.bool_(), "in the slice's circuit by faithfulness (manifest: its target and search)"),
    ),
    "examples": (
        Column("slice", _STR, "slice name (a named slice, not their union)"),
        Column("block", _STR, "channel name"),
        Column("ranking", _STR, "effect: |first-order effect| at the token; input: norm of its read-subspace input"),
        Column("rank", _INT, "1 = the channel's strongest token of the slice in this ranking"),
        Column("sequence", _INT, "prompt index in the slice"),
        Column("position", _INT, "position in the prompt"),
        Column("value", _FLOAT, "effect: signed first-order effect (negative: helps); input: the norm"),
        Column("tokens", _INTS, "token ids of the context: up to --example-context before, the token, the next"),
        Column("focus", _INT, "index of the example's token in tokens"),
        Column("text", _STR, "the context decoded, the example's token in « »", nullable=True),
    ),
    "steering": (
        Column("slice", _STR, "slice name (a named slice)"),
        Column("block", _STR, "channel name: the direction is one of its write subspace's"),
        Column("direction", _INT, "the direction's index in the write subspace's basis"),
        Column("push", _FLOAT, "the coordinate moved by this many of its standard deviations on the slice"),
        Column("loss_delta", _FLOAT, "mean change of the slice's metric over the prompts measured"),
        Column("loss_se", _FLOAT, "its standard error over those prompts"),
        Column("accuracy_delta", _FLOAT, "change of answer accuracy (task slices)", nullable=True),
        Column("kl", _FLOAT, "mean KL divergence from the clean prediction at the scored positions"),
        Column("flipped", _FLOAT, "share of the scored positions whose most likely token changes"),
    ),
    "matches": (
        Column("previous_checkpoint", _STR, "label of the checkpoint before"),
        Column("block", _STR, "channel name (the same in both checkpoints)"),
        Column("similarity", _FLOAT, "mean squared cosine of principal angles, over the channel's roles"),
        Column("fingerprint_similarity", _FLOAT, "fingerprint similarity 1 / (1 + squared distance)"),
    ),
}

#: The manifest's keys besides ``format_version`` and ``files``.
MANIFEST_KEYS = (
    "model",
    "checkpoint",
    "slices",
    "ingest_slice",
    "config",
    "config_hash",
    "fidelity",
    "ranks",
    "series",
    "fingerprint_features",
    "code_version",
    "device",
    "started",
    "finished",
)


def schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in TABLES[table]])


def columns(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]


def frame(table: str, rows: Iterable[dict]) -> pd.DataFrame:
    """``rows`` (dicts keyed by the table's column names) as a frame with exactly those columns."""
    names = columns(table)
    rows = list(rows)
    for row in rows[:1]:
        if set(row) != set(names):
            raise ValueError(f"{table} rows have columns {sorted(row)}, the schema has {sorted(names)}")
    return pd.DataFrame(rows, columns=names)


@dataclass
class Artifact:
    path: Path
    manifest: dict
    tables: dict[str, pd.DataFrame]

    def bases(self) -> dict[str, torch.Tensor]:
        return load_file(self.path / BASES)

    def fingerprints(self) -> dict[str, list[float]]:
        """Each block's fingerprint by block name."""
        blocks = self.tables["blocks"]
        return dict(zip(blocks["name"], (list(f) for f in blocks["fingerprint"])))

    def basis_uri(self, key: str) -> str:
        return f"{(self.path / BASES).resolve().as_uri()}#{key}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Temporary folders of :func:`write_artifact`: ``.<name>.partial-<host>-<pid>`` while written,
#: ``.<name>.old-<pid>`` while replaced (and ``.<name>.partial-<pid>`` from circuit-atlas 0.2).
TEMPORARY = re.compile(r"^\..+\.(?:partial|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def partial_path(final: Path) -> Path:
    """Where :func:`write_artifact` builds ``final`` (hidden, named after this host and process)."""
    return final.with_name(f".{final.name}.partial-{socket.gethostname()}-{os.getpid()}")


def remove_abandoned(folder: Path) -> list[Path]:
    """Delete the temporary folders in ``folder`` whose writer (on this host) no longer runs."""
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = TEMPORARY.match(entry.name)
        if match is None or match["host"] not in (None, socket.gethostname()):
            continue  # not a temporary folder, or another host's
        if entry.is_dir() and int(match["pid"]) != os.getpid() and process_is_gone(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _to_arrow(table: str, data: pd.DataFrame) -> pa.Table:
    if list(data.columns) != columns(table):
        raise ValueError(f"table {table} has columns {list(data.columns)}, the schema has {columns(table)}")
    return pa.Table.from_pandas(data, schema=schema(table), preserve_index=False)


def write_artifact(
    final: Path, manifest: dict, tables: dict[str, pd.DataFrame], bases: dict[str, torch.Tensor]
) -> Path:
    """Write everything under :func:`partial_path`, then rename it to ``final`` (replacing it)."""
    final = Path(final)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing or set(tables) != set(TABLES):
        raise ValueError(f"artifact lacks manifest keys {missing} or has tables {sorted(tables)} != {sorted(TABLES)}")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(final.parent)
    partial = partial_path(final)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in TABLES:
        pq.write_table(_to_arrow(name, tables[name]), partial / f"{name}.parquet")
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in bases.items()}, partial / BASES)
    files = sorted(p.name for p in partial.iterdir())
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": {f: _sha256(partial / f) for f in files}}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(retired)
        partial.rename(final)
        shutil.rmtree(retired)
    else:
        partial.rename(final)
    return final


def read_manifest(path: Path) -> dict:
    """The manifest of the artifact at ``path``; :class:`UserError` if there is none of this format."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise UserError(
            f"{path} is not a Circuit Atlas artifact (no {MANIFEST}). Give a directory "
            f"written by `circuit-atlas ingest --out`."
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{manifest_file} is not valid JSON ({error}): the artifact is damaged. Re-run the ingest that wrote it."
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise UserError(
            f"{path} has artifact format {version}; this circuit-atlas reads format "
            f"{FORMAT_VERSION}. Re-run the ingest with this version."
        )
    missing = [k for k in (*MANIFEST_KEYS, "files") if k not in manifest]
    if missing or not isinstance(manifest["files"], dict):
        raise UserError(
            f"{manifest_file} lacks {', '.join(missing) or 'a files map'}: the artifact is "
            f"damaged. Re-run the ingest that wrote it."
        )
    wrong = _manifest_shape_errors(manifest)
    if wrong:
        raise UserError(f"{manifest_file} has {wrong[0]}: the artifact is damaged. Re-run the ingest that wrote it.")
    return manifest


def _manifest_shape_errors(manifest: dict) -> list[str]:
    """What in the manifest does not have the shape the loader reads (empty when all is well)."""
    model, checkpoint = manifest["model"], manifest["checkpoint"]
    errors = []
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
        errors.append("no model name")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("label"), str) or not checkpoint["label"]:
        errors.append("no checkpoint label")
    elif isinstance(checkpoint.get("step"), bool) or not isinstance(checkpoint.get("step"), int):
        errors.append(f"checkpoint step {checkpoint.get('step')!r}, not a whole number")
    slices = manifest["slices"]
    if not isinstance(slices, list) or not all(isinstance(s, dict) and {"id", "name"} <= set(s) for s in slices):
        errors.append("slices that are not a list of {id, name, ...} entries")
    if not isinstance(manifest["fidelity"], dict) or not {"loss_recovered", "fraction"} <= set(manifest["fidelity"]):
        errors.append("no fidelity {loss_recovered, fraction}")
        return errors
    features = manifest["fingerprint_features"]
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) and f.isprintable() and f for f in features)
    ):
        # the bulk import's CSV cannot tell an empty name or a control character from its delimiters
        errors.append(f"fingerprint_features {features!r:.60}, not a list of non-empty printable names")
    fields = {  # what the loader reads, by where it is: (value, its kinds, may it be null)
        "checkpoint.tokens_seen": (checkpoint.get("tokens_seen"), (int,), True),
        "checkpoint.loss": (checkpoint.get("loss"), (int, float), True),
        "fidelity.loss_recovered": (manifest["fidelity"]["loss_recovered"], (int, float), True),
        "fidelity.fraction": (manifest["fidelity"]["fraction"], (int, float), False),
        "ingest_slice": (manifest["ingest_slice"], (str,), False),
        "config": (manifest["config"], (dict,), False),
        "config_hash": (manifest["config_hash"], (str,), False),
        "code_version": (manifest["code_version"], (str,), False),
        "device": (manifest["device"], (str,), False),
        "started": (manifest["started"], (int, float), False),
        "finished": (manifest["finished"], (int, float), False),
    }
    for name, (value, kinds, nullable) in fields.items():
        if value is None and nullable:
            continue
        finite = not isinstance(value, float) or math.isfinite(value)
        if isinstance(value, bool) or not isinstance(value, kinds) or not finite:
            errors.append(f"{name} {value!r:.40}, not {' or '.join(k.__name__ for k in kinds)}")
    return errors


def read_artifact(path: Path) -> Artifact:
    """Read and verify an artifact directory; :class:`UserError` if it is not a whole one."""
    path = Path(path)
    manifest = read_manifest(path)
    expected = {f"{name}.parquet" for name in TABLES} | {BASES}
    if set(manifest["files"]) != expected:
        raise UserError(
            f"{path / MANIFEST} lists files {sorted(manifest['files'])}, expected {sorted(expected)}: "
            f"the artifact is damaged. Re-run the ingest that wrote it."
        )
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise UserError(
                f"{file} is missing or does not match its hash in the manifest: the artifact "
                f"is damaged. Re-run the ingest that wrote it."
            )
    tables = {}
    for name in TABLES:
        try:
            table = pq.read_table(path / f"{name}.parquet")
        except (pa.ArrowInvalid, OSError) as error:
            raise UserError(f"{path / name}.parquet is not readable Parquet ({error}). Re-run the ingest.") from error
        if not table.schema.equals(schema(name)):
            raise UserError(
                f"{path / name}.parquet has columns {table.schema.names} of types "
                f"{[str(t) for t in table.schema.types]}, not those of artifact format "
                f"{FORMAT_VERSION}. Re-run the ingest with this version."
            )
        tables[name] = table.to_pandas()
    wrong = _reference_errors(manifest, tables)
    if wrong:
        raise UserError(f"{path}: {wrong[0]}; the artifact is inconsistent. Re-run the ingest that wrote it.")
    return Artifact(path, manifest, tables)


def _reference_errors(manifest: dict, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Rows that name a block, role or slice the artifact does not have (empty when all is well)."""
    blocks = tables["blocks"]["name"]
    errors = [f"blocks names {name!r} twice" for name in blocks[blocks.duplicated()].unique()[:1]]
    matched = tables["matches"]["block"]
    errors += [f"matches name {name!r} twice" for name in matched[matched.duplicated()].unique()[:1]]
    known_blocks, known_slices = set(blocks.unique()), {s["name"] for s in manifest["slices"]}
    for table, column in (
        ("subspaces", "block"),
        ("edges", "writer"),
        ("edges", "reader"),
        ("slice_edges", "writer"),
        ("slice_edges", "reader"),
        ("activity", "block"),
        ("examples", "block"),
        ("steering", "block"),
        ("matches", "block"),
    ):
        unknown = sorted(set(tables[table][column].unique()) - known_blocks)
        if unknown:
            errors.append(f"{table}.{column} names block {unknown[0]!r}, which is not in blocks")
    for table in ("slice_edges", "activity", "examples", "steering"):
        unknown = sorted(set(tables[table]["slice"].unique()) - known_slices)
        if unknown:
            errors.append(f"{table} names slice {unknown[0]!r}, which the manifest does not list")
    for table in ("edges", "slice_edges"):
        frame = tables[table]
        writers = subspace_positions(tables["subspaces"], frame["writer"], "out")
        readers = subspace_positions(tables["subspaces"], frame["reader"], frame["role"])
        missing = sorted(
            {(w, "out") for w in frame["writer"][writers < 0]}
            | set(zip(frame["reader"][readers < 0], frame["role"][readers < 0]))
        )
        if missing:
            errors.append(f"{table} names subspace {'/'.join(missing[0])!r}, which is not in subspaces")
    if tables["matches"]["previous_checkpoint"].nunique() > 1:
        errors.append("matches name more than one previous checkpoint")
    return errors + _value_errors(tables)


#: Per table, the key a row is unique by, and the score columns that are finite and >= 0 by definition
#: (to float rounding: a share computed as a difference can come out at -1e-10).
UNIQUE_ROWS = {"edges": ["writer", "reader", "role"], "slice_edges": ["writer", "reader", "role", "slice"]}
ROUNDING = 1e-6
NON_NEGATIVE = {
    "edges": ["weight", "strength", "flow", "attribution"],
    "slice_edges": ["attribution"],
    "activity": ["attribution", "mean_norm"],
}


def subspace_positions(subspaces: pd.DataFrame, blocks: pd.Series, roles: pd.Series | str) -> np.ndarray:
    """For each row of ``blocks`` and ``roles`` (one role for all, or one per row), the position in
    ``subspaces`` (columns ``block``, ``role``) of that block's subspace of that role; -1 where there is
    none. The distinct blocks and roles are looked up once each (an edge table names a few hundred)."""
    position = {key: i for i, key in enumerate(zip(subspaces["block"].tolist(), subspaces["role"].tolist()))}
    block_codes, block_names = pd.factorize(blocks, use_na_sentinel=False)
    role_codes, role_names = (0, [roles]) if isinstance(roles, str) else pd.factorize(roles, use_na_sentinel=False)
    found = [[position.get((b, r), -1) for r in list(role_names)] for b in block_names.tolist()]
    return np.array(found, np.int64).reshape(len(block_names), len(role_names))[block_codes, role_codes]


def _value_errors(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Rows given twice, and scores that are NaN, infinite or negative where they cannot be."""
    errors = []
    for table, key in UNIQUE_ROWS.items():
        twice = tables[table][tables[table].duplicated(key)]
        errors += [f"{table} gives {'/'.join(map(str, row))} twice" for row in twice[key].head(1).itertuples(False)]
    for table, columns in NON_NEGATIVE.items():
        for column in columns:
            values = tables[table][column].to_numpy(np.float64, na_value=np.nan)
            bad = values[~(np.isfinite(values) & (values >= -ROUNDING))]
            errors += [f"{table}.{column} holds {value!r}, not a finite number >= 0" for value in bad[:1].tolist()]
    return errors


def is_complete(path: Path, config_hash: str | None = None) -> bool:
    """Whether ``path`` holds a whole artifact of this format (and of ``config_hash``, if given)."""
    try:
        manifest = read_manifest(path)
    except UserError:
        return False
    return config_hash is None or manifest.get("config_hash") == config_hash


def find_artifacts(root: Path) -> list[Path]:
    """``root`` itself if it is an artifact, else every artifact below it, in path order."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob(MANIFEST) if not TEMPORARY.match(p.parent.name))
    if not found:
        raise UserError(
            f"No artifact under {root}: expected directories with a {MANIFEST}, "
            f"as written by `circuit-atlas ingest --out {root}`."
        )
    return found
