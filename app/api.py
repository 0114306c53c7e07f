"""The Python API: what notebooks use, and the CLI's path to the catalog and the ingest.

::

    import circuit_atlas as ca

    paths = ca.ingest_model("path/to/model", data=["repeated", "random"], out="artifacts/")  # no catalog
    with ca.open_catalog() as catalog:          # the local server of ~/.circuit-atlas/neo4j, or a URI
        catalog.migrate()
        catalog.load("artifacts/")
        catalog.checkpoints()                   # pandas DataFrame
        catalog.query("top_edges", checkpoint="m@main", by="flow", limit=10)
        graph = catalog.circuit("m@main", "repeated").to_networkx()

Every method that reads the catalog returns a pandas DataFrame (one row per query row) or a
:class:`~circuit_atlas.circuits.Circuit`; every user error is a
:class:`~circuit_atlas.errors.UserError` whose message says what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import neo4j
import pandas as pd

from circuit_atlas import queries
from circuit_atlas.ingest import storage
from circuit_atlas.schema import migrations

from .circuits import Circuit, fetch_circuit
from .comparison import Comparison, Reference, compare
from .connection import Neo4jSettings, open_driver
from .errors import UserError
from .local_server import Distribution, LocalServer, default_server_dir
from .pruning import MIN_ATTRIBUTION, TOP_K, check_pruning
from .timeline import check_plot_path, plot_timeline, plot_training_timeline, training_timeline

if TYPE_CHECKING:
    import networkx

    from circuit_atlas.ingest.config import IngestConfig
    from circuit_atlas.ingest.model_adapter import LoadedModel
    from circuit_atlas.ingest.runnable import Runnable
    from circuit_atlas.ingest.sweep import RaySweep

    from .loader import LoadSummary

DEFAULT_URI = "bolt://127.0.0.1:7687"


def resolve_settings(
    uri: str | None = None,
    user: str = "neo4j",
    password: str | None = None,
    database: str = "neo4j",
    server_dir: Path | None = None,
) -> Neo4jSettings:
    """Connection settings: what is given wins, then ``NEO4J_*`` variables, then the local server folder.

    ``server_dir`` (default ``$CIRCUIT_ATLAS_NEO4J_DIR`` or ``~/.circuit-atlas/neo4j``) supplies the
    URI and password of a server started by ``circuit-atlas neo4j start`` when they are not given.
    """
    uri = uri or os.environ.get("NEO4J_URI")
    password = password or os.environ.get("NEO4J_PASSWORD")
    server = LocalServer(
        Path(server_dir or os.environ.get("CIRCUIT_ATLAS_NEO4J_DIR") or default_server_dir()), Distribution.in_cache()
    )
    local = server.settings()
    uri = uri or (local.bolt_uri if local else DEFAULT_URI)
    if password is None and local is not None and uri == local.bolt_uri:
        password = server.password()
    if password is None:
        raise UserError(
            f"No Neo4j password for {uri}: pass --password or set NEO4J_PASSWORD, or start a local "
            f"server with `circuit-atlas neo4j start` (found through --neo4j-dir)."
        )
    return Neo4jSettings(uri=uri, user=user, password=password, database=database)


def open_catalog(
    where: str | Path | None = None, *, user: str = "neo4j", password: str | None = None, database: str = "neo4j"
) -> Catalog:
    """A :class:`Catalog` connected to ``where``: a Bolt URI (``bolt://``, ``neo4j://``, ...) or the
    folder of a local server (which must hold one: ``NEO4J_URI`` does not replace it); by default
    ``NEO4J_URI`` or the default local server folder."""
    _require(where, (str, Path, type(None)), "where", "a Bolt URI or the folder of a local server")
    if where is None or "://" in str(where):
        return Catalog(resolve_settings(None if where is None else str(where), user, password, database))
    folder = Path(where).expanduser()
    local = LocalServer(folder, Distribution.in_cache()).settings()
    if local is None:
        raise UserError(
            f"{folder} holds no local Neo4j server: start one with `circuit-atlas neo4j start --neo4j-dir "
            f"{folder}`, or pass a Bolt URI (bolt://host:7687)."
        )
    return Catalog(resolve_settings(local.bolt_uri, user, password, database, folder))


def _require(value, types: tuple[type, ...], name: str, what: str) -> None:
    """:class:`UserError` unless ``value`` is one of ``types`` (the API's arguments, checked before any work)."""
    if not isinstance(value, types) or isinstance(value, bool):
        raise UserError(f"{name} must be {what}, not {type(value).__name__} {value!r:.60}.")


def resolve_device(choice: str = "auto") -> str:
    """``auto`` (CUDA when torch sees one, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(choice, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", choice):
        raise UserError(f"--device {choice!r} is not a device: use auto, cpu, cuda or cuda:N.")
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {choice}: torch sees no CUDA device on this machine. Use --device cpu.")
    if choice.startswith("cuda:") and int(choice[5:]) >= torch.cuda.device_count():
        raise UserError(f"--device {choice}: torch sees {torch.cuda.device_count()} CUDA device(s), 0 to N-1.")
    return choice


def _check_token_files(data: Sequence[str]) -> None:
    """Read every ``.npy``/``.pt`` slice once before the model loads, so an unreadable one fails fast."""
    from circuit_atlas.ingest.data import read_token_file

    for argument in data:
        path = Path(argument.rpartition("=")[2]).expanduser()
        if path.suffix in (".npy", ".pt") and path.is_file():
            read_token_file(path)


def ingest_model(
    model: str | Path | LoadedModel,
    data: Sequence[str],
    out: str | Path,
    config: IngestConfig | None = None,
    *,
    checkpoints: Sequence[str] = (),
    weights: str | Path | None = None,
    name: str | None = None,
    device: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] = print,
    on_artifact: Callable[[Path], object] | None = None,
    force: bool = False,
    label: str | None = None,
    ray: RaySweep | None = None,
) -> list[Path]:
    """Compute one artifact per checkpoint of ``model`` under ``out``; returns their directories.

    ``model``: a hub name, a local model directory, a TransformerLens config JSON (with
    ``weights``, its state dict file, or several weights files as ``checkpoints``), or a model
    loaded with :func:`circuit_atlas.ingest.model_adapter.load_model`. ``data``: slices (``random``,
    ``repeated``, token or text files, ``NAME=SOURCE``). ``checkpoints``: local checkpoint
    directories or hub revisions. ``label``: the one checkpoint's label in the catalog (default: its
    folder's, revision's or weights file's). A checkpoint whose artifact under ``out`` is complete for the same
    settings and data is skipped unless ``force``, so an interrupted run resumes. ``ray``: compute the
    checkpoints as Ray tasks (:class:`circuit_atlas.ingest.sweep.RaySweep`: a local runtime or a
    cluster's address, and each task's resources); the artifacts are the same. Nothing here needs a
    catalog.
    """
    from circuit_atlas.ingest.config import IngestConfig
    from circuit_atlas.ingest.model_adapter import LoadedModel
    from circuit_atlas.ingest.native import is_native_config
    from circuit_atlas.ingest.pipeline import ingest as run

    _require(model, (str, Path, LoadedModel), "model", "a model name, a folder or config path, or a loaded model")
    _require(out, (str, Path), "out", "a folder path or an fsspec URL")
    _require(config, (IngestConfig, type(None)), "config", "an IngestConfig (ca.IngestConfig(n_seq=...))")
    if not isinstance(data, (list, tuple)) or not all(isinstance(d, str) for d in data):
        raise UserError(f"data must be a list of slice arguments such as ['repeated', 'random'], not {data!r:.60}.")
    if name is not None and (not isinstance(name, str) or not name.strip() or name != name.strip()):
        raise UserError(f"--name {name!r}: give a model name without leading or trailing spaces.")
    if weights is not None and not (isinstance(model, (str, Path)) and is_native_config(str(model))):
        raise UserError(
            f"--weights goes with a TransformerLens config JSON, and {model} is not one: a Hugging Face "
            f"model folder holds its own weights (give other checkpoints of it with --checkpoint)."
        )
    _check_token_files(data)
    source = str(model) if isinstance(model, (str, Path)) else model
    folder = Path(out)
    if storage.is_url(out):  # written into the URL's local mirror, each artifact uploaded when whole
        url, folder, then = str(out), storage.mirror(str(out)), on_artifact
        with contextlib.suppress(UserError):
            storage.download(url)  # what the URL already holds: a rerun resumes from it

        def on_artifact(path: Path) -> object:
            uploaded = storage.upload(path, url)
            if uploaded is not None:
                echo(f"[{path.name}] uploaded to {uploaded}")
            return then(path) if then is not None else None

    return run(
        source,
        [*map(str, checkpoints), *([str(weights)] if weights else [])],
        list(data),
        folder,
        config or IngestConfig(),
        device if ray is not None and device == "auto" else resolve_device(device),  # a sweep's workers choose
        name,
        progress,
        echo,
        on_artifact,
        force=force,
        label=label,
        ray=ray,
    )


def library_query(name: str) -> queries.Query:
    """The library query ``name``; :class:`UserError` naming the way to list them if there is none."""
    library = queries.library()
    if name not in library:
        raise UserError(f"No query named {name!r}. `circuit-atlas query --list` shows them all.")
    return library[name]


def circuit_default(name: str):
    """The ``circuit`` query's default of its parameter ``name`` (its header is the one place it is set)."""
    return {p.name: p for p in library_query("circuit").types}[name].default_value()


def check_circuit_params(
    checkpoint: str, slice_name: str, min_effect: float | None = None, min_attribution: float | None = None
) -> dict:
    """The parameters of a circuit, checked by the ``circuit`` query's declared types (None: its default)."""
    given = {"min_effect": min_effect, "min_attribution": min_attribution}
    checked = library_query("circuit").check(
        {"checkpoint": checkpoint, "slice": slice_name} | {k: v for k, v in given.items() if v is not None}
    )
    return {
        "checkpoint": checked["checkpoint"],
        "slice_name": checked["slice"],
        "min_effect": checked["min_effect"],
        "min_attribution": checked["min_attribution"],
    }


def _returned_columns(name: str) -> list[str]:
    """The column names a query's header declares it returns (for an empty result)."""
    returns = re.sub(r"\([^)]*\)", "", queries.library()[name].returns)
    return [part.strip() for part in returns.split(",") if part.strip() and part.strip() != "nothing"]


class Catalog:
    """A connection to one catalog database. Close it (or use ``with``) when done."""

    def __init__(self, settings: Neo4jSettings):
        self.settings = settings
        self.driver: neo4j.Driver = open_driver(settings)
        self._schema_checked = False

    @property
    def database(self) -> str:
        return self.settings.database

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.settings.uri!r}, database={self.database!r})"

    # --- schema ---------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns the file names applied (empty when current)."""
        return [m.filename for m in migrations.migrate(self.driver, self.database)]

    def migrations(self) -> pd.DataFrame:
        """Every migration: version, name, status (applied or pending), applied_at, checksum."""
        return pd.DataFrame(
            [
                {
                    "version": f"V{s.version:03d}",
                    "name": s.name,
                    "status": s.status,
                    "applied_at": s.applied_at,
                    "checksum": s.checksum[:12],
                }
                for s in migrations.migration_states(self.driver, self.database)
            ]
        )

    def require_current_schema(self) -> None:
        """Raise :class:`UserError` unless the catalog's schema is this version's (checked once per
        Catalog: every method that reads or writes the catalog calls this first)."""
        if not self._schema_checked:
            migrations.require_current_schema(self.driver, self.database)
            self._schema_checked = True

    # --- writing --------------------------------------------------------------------------------

    def load(
        self,
        path: str | Path,
        top_k: int | None = TOP_K,
        min_attribution: float = MIN_ATTRIBUTION,
        echo: Callable[[str], None] = print,
    ) -> list[LoadSummary]:
        """Load the artifact at ``path`` (or every artifact below it, by model and step); returns summaries.

        Every artifact is read and checked before the first is written, so a damaged one among many
        is reported before anything changes; each checkpoint is then published whole or not at all.
        """
        from circuit_atlas.ingest.artifact import find_artifacts, read_artifact, read_manifest

        from .loader import load_artifact

        _require(path, (str, Path), "path", "an artifact folder or a folder of artifacts")
        check_pruning(top_k, min_attribution)
        self.require_current_schema()

        def order(artifact: Path):
            manifest = read_manifest(artifact)
            return manifest["model"]["name"], manifest["checkpoint"]["step"]

        paths = sorted(find_artifacts(storage.local_artifacts(path)), key=order)
        if len(paths) > 1:
            for artifact in paths:
                read_artifact(artifact)
        return [load_artifact(self.driver, self.database, p, top_k, min_attribution, echo) for p in paths]

    def ingest(
        self,
        model: str | Path | LoadedModel,
        data: Sequence[str],
        out: str | Path,
        config: IngestConfig | None = None,
        *,
        top_k: int | None = TOP_K,
        min_attribution: float = MIN_ATTRIBUTION,
        echo: Callable[[str], None] = print,
        **options: Any,
    ) -> list[Path]:
        """:func:`ingest_model` (``options`` are its keywords: ``checkpoints``, ``weights``, ``name``,
        ``device``, ``progress``, ``force``, ``label``, ``ray``), loading each checkpoint's artifact as soon as it
        is written (or found complete, when a run resumes), pruned by ``top_k`` and ``min_attribution``
        as :meth:`load` prunes."""
        from .loader import load_artifact

        if "on_artifact" in options:
            raise UserError("Catalog.ingest loads each artifact itself; call ca.ingest_model for on_artifact.")
        check_pruning(top_k, min_attribution)
        self.require_current_schema()  # fail before the compute, not after it

        def load(path: Path) -> LoadSummary:
            return load_artifact(self.driver, self.database, path, top_k, min_attribution, echo)

        return ingest_model(model, data, out, config, echo=echo, on_artifact=load, **options)

    # --- reading --------------------------------------------------------------------------------

    def rows(self, name: str, **params) -> list[dict]:
        """Run the library query ``name`` (``queries.library()`` lists them) in a read transaction;
        its rows as dicts of plain values, in the query's order. The parameters are checked against
        the types the query's header declares before it runs (:class:`UserError` if one does not fit)."""
        query = library_query(name)
        checked = query.check(params)
        self.require_current_schema()
        return queries.run(self.driver, self.database, query, checked)

    def query(self, name: str, **params) -> pd.DataFrame:
        """:meth:`rows` as a DataFrame (columns in the query's order, even when there is no row)."""
        rows = self.rows(name, **params)
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else _returned_columns(name))

    def models(self) -> pd.DataFrame:
        """Every model: its shape and number of complete checkpoints."""
        return self.query("models")

    def checkpoints(self, model: str | None = None) -> pd.DataFrame:
        """The complete checkpoints of ``model`` (of every model when None), in step order."""
        return self.query("checkpoints", model=model)

    def checkpoint_graph(self, checkpoint: str) -> networkx.MultiDiGraph:
        """Every channel of ``checkpoint`` and every edge between them (its ``FEEDS``), as a
        ``networkx.MultiDiGraph`` keyed by read role: nodes carry ``order``, ``kind``, ``layer``,
        ``head``, ``fidelity``, ``ranks`` (role=rank, comma-separated), ``induction`` and
        ``previous_token``; edges ``role``, ``weight``, ``strength``, ``flow``, ``attribution`` and
        ``patched``. ``write_graphml`` writes it as GraphML (``export CHECKPOINT -o x.graphml``)."""
        import networkx

        channels = self.rows("checkpoint_channels", checkpoint=checkpoint)
        if not channels:
            raise UserError(
                f"No complete checkpoint {checkpoint!r}: `circuit-atlas query checkpoints` lists the checkpoints."
            )
        graph = networkx.MultiDiGraph(checkpoint=checkpoint)
        for row in channels:
            attributes = {
                k: row[k] for k in ("order", "kind", "layer", "head", "fidelity", "induction", "previous_token")
            }
            graph.add_node(row["channel"], **attributes, ranks=",".join(row["ranks"]))
        for row in self.rows("top_edges", checkpoint=checkpoint, by="weight", limit=2**62):
            properties = ("weight", "strength", "flow", "attribution", "patched")
            graph.add_edge(
                row["writer"], row["reader"], key=row["role"], role=row["role"], **{k: row[k] for k in properties}
            )
        return graph

    def compare(
        self, checkpoint: str, slice_name: str, reference: str | Path | Reference, min_effect: float | None = None
    ) -> Comparison:
        """``checkpoint``'s circuits on ``slice_name`` against a reference circuit (a JSON file, or a
        :class:`~circuit_atlas.comparison.Reference`): channel precision and recall, and each edge
        score's ROC AUC (:mod:`circuit_atlas.comparison`)."""
        if not isinstance(reference, Reference):
            reference = Reference.read(Path(reference))
        self.require_current_schema()
        return compare(self, checkpoint, slice_name, reference, min_effect)

    def artifact(self, checkpoint: str) -> Path:
        """The artifact folder of ``checkpoint``, from its subspaces' ``basis_uri``."""
        rows = self.rows("checkpoint_artifact", checkpoint=checkpoint)
        if not rows:
            raise UserError(
                f"No complete checkpoint {checkpoint!r} in the catalog; list them with "
                "`circuit-atlas query checkpoints`."
            )
        folder = Path(unquote(urlparse(rows[0]["basis_uri"]).path)).parent
        if not folder.is_dir():
            raise UserError(
                f"The artifact of {checkpoint} was at {folder}, which no longer exists; steering needs it (its "
                "bases and the settings of its data)."
            )
        return folder

    def steer(
        self,
        checkpoint: str,
        interventions: list[str],
        slices: list[str] | None = None,
        device: str = "cpu",
        seed: int = 0,
        save: bool = False,
    ) -> pd.DataFrame:
        """Every intervention (specs: :mod:`circuit_atlas.ingest.steering`) on ``checkpoint``'s slices
        (default all), measured on its model and prompts from its artifact (:mod:`circuit_atlas.steering`);
        with ``save``, also kept in the catalog (the ``interventions`` query lists them)."""
        from .steering import save_effects, steer_artifact  # torch and the model code: only when steering

        self.require_current_schema()
        effects = steer_artifact(self.artifact(checkpoint), interventions, slices, device, seed)
        if save:
            save_effects(self.driver, self.database, checkpoint, effects, seed)
        return effects

    def runnable(
        self,
        checkpoint: str,
        compressed: bool | Sequence[str] = False,
        circuit: str | None = None,
        device: str = "cpu",
        min_attribution: float | None = None,
    ) -> Runnable:
        """``checkpoint`` runnable as the catalog describes it: its channels compressed (all, or the named
        ones), or its circuit by faithfulness on a slice, at edge level with ``min_attribution`` (the
        edges between its channels of at least that effect kept, every other edge ablated;
        :mod:`circuit_atlas.ingest.runnable`); rebuilt from its artifact, so its losses reproduce the
        stored recovery and faithfulness."""
        from circuit_atlas.ingest.runnable import Runnable  # torch and the model code: only when running

        return Runnable.from_artifact(self.artifact(checkpoint), compressed, circuit, device, min_attribution)

    def interventions(
        self, model: str | None = None, channel: str | None = None, slice_name: str | None = None
    ) -> pd.DataFrame:
        """The saved interventions (the ``interventions`` query), filtered by model, channel and slice."""
        return self.query("interventions", model=model, channel=channel, slice=slice_name)

    def directions(self, checkpoint: str, slice_name: str, channel: str | None = None) -> pd.DataFrame:
        """What each write direction of ``checkpoint`` does (the ``directions`` query): its direct output
        tokens, and its steering measured on ``slice_name`` by ``ingest --steer``."""
        return self.query("directions", checkpoint=checkpoint, slice=slice_name, channel=channel)

    def timeline(self, model: str, channel: str, plot: Path | None = None) -> pd.DataFrame:
        """Channel ``channel`` of ``model`` across its complete checkpoints (the ``timeline`` query: one
        row per checkpoint and slice); with ``plot``, also drawn there (SVG or PNG)."""
        if plot is not None:
            check_plot_path(Path(plot))  # before the query: a bad path writes nothing
        rows = self.query("timeline", model=model, channel=channel)
        if plot is not None:
            plot_timeline(rows, model, channel, Path(plot))
        return rows

    def training_timeline(
        self,
        model: str,
        slice_name: str,
        channels: Sequence[str] | None = None,
        edges: Sequence[tuple[str, str, str]] | None = None,
        plot: Path | None = None,
    ) -> pd.DataFrame:
        """Channels' ablation effects and edges' patched effects on ``slice_name`` across ``model``'s
        checkpoints (:func:`circuit_atlas.timeline.training_timeline`; by default the last checkpoint's
        circuit and its 3 strongest edges); with ``plot``, also drawn there (SVG or PNG)."""
        if plot is not None:
            check_plot_path(Path(plot))  # before the queries: a bad path writes nothing
        self.require_current_schema()
        frame = training_timeline(self, model, slice_name, channels, edges)
        if plot is not None:
            plot_training_timeline(frame, model, slice_name, Path(plot))
        return frame

    def slices(self, checkpoint: str | None = None) -> pd.DataFrame:
        """The data slices of ``checkpoint`` (of every complete checkpoint when None)."""
        return self.query("slices", checkpoint=checkpoint)

    def circuit(
        self, checkpoint: str, slice_name: str, min_effect: float | None = None, min_attribution: float | None = None
    ) -> Circuit:
        """The circuit of ``checkpoint`` on ``slice_name`` (thresholds: the ``circuit`` query's defaults
        unless given); ``.to_networkx()`` gives a graph."""
        checked = check_circuit_params(checkpoint, slice_name, min_effect, min_attribution)
        self.require_current_schema()
        return fetch_circuit(self.driver, self.database, **checked)

    def component(
        self,
        checkpoint: str,
        channel: str,
        min_share: float = 0.2,
        by: str | None = None,
        slice_name: str | None = None,
        min_effect: float | None = 0.1,
    ) -> networkx.Graph:
        """The component holding ``channel`` among ``checkpoint``'s ``components`` (the same
        parameters: edges whose ``by`` score, attribution by default, is at least ``min_share`` of the
        largest; on a slice, the channels with an exact ablation effect of at least ``min_effect`` and
        the edges' attribution on it), as a ``networkx.Graph``: nodes carry ``order``, ``kind``,
        ``layer``, ``head`` and ``fidelity`` (loss recovered with the channel alone compressed); edges
        carry ``score`` (the largest joining score over read roles) and ``roles``."""
        import networkx

        params = {
            "checkpoint": checkpoint,
            "slice": slice_name,
            "by": by,
            "min_share": min_share,
            "min_effect": min_effect,
        }
        members = next(
            (row["channels"] for row in self.rows("components", **params) if channel in row["channels"]), None
        )
        if members is None:
            where = f"with an effect of at least {min_effect} on slice {slice_name!r} in" if slice_name else "in"
            raise UserError(
                f"No channel {channel!r} {where} complete checkpoint {checkpoint!r}; "
                f"`circuit-atlas query checkpoint_channels -p checkpoint=...` lists its channels"
                + (", `circuit-atlas query slices` its slices." if slice_name else ".")
            )
        nodes = {row["channel"]: row for row in self.rows("checkpoint_channels", checkpoint=checkpoint)}
        graph = networkx.Graph(**params)
        for name in members:
            graph.add_node(name, **{k: nodes[name][k] for k in ("order", "kind", "layer", "head", "fidelity")})
        score = by or "attribution"
        if slice_name is not None and score in ("attribution", "patched"):
            edges = self.rows("top_slice_edges", checkpoint=checkpoint, slice=slice_name, limit=2**62, by=score)
        else:
            edges = self.rows("top_edges", checkpoint=checkpoint, by=score, limit=2**62)
        least = min_share * max((row[score] for row in edges), default=0.0)
        for row in edges:
            if row[score] >= least and row["writer"] in graph and row["reader"] in graph:
                if not graph.has_edge(row["writer"], row["reader"]):
                    graph.add_edge(row["writer"], row["reader"], score=row[score], roles=[])
                data = graph.edges[row["writer"], row["reader"]]
                data["roles"].append(row["role"])
                data["score"] = max(data["score"], row[score])
        return graph
