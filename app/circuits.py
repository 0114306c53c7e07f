"""A checkpoint's circuit on one data slice, as data: fetched from the catalog, as JSON or networkx.

The circuit is the library's ``circuit`` query: the channels whose ablation raises the
slice's metric loss by at least ``min_effect`` (nats), and the edges between them whose effect on
the slice (patched where measured, else attribution) is at least ``min_attribution``; channels
come in channel order, with their kind, layer, head and fidelity from ``checkpoint_channels``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import neo4j

from . import queries
from .errors import UserError


@dataclass(frozen=True)
class CircuitChannel:
    """A member of the circuit: a channel (Block) of the checkpoint with its effect on the slice."""

    name: str
    order: int  # position in the channel order
    kind: str
    layer: int
    head: int | None
    effect: float  # nats of slice loss its mean ablation adds
    fidelity: float | None  # loss recovered with it alone compressed (its Block's; None: ablation moves nothing)


@dataclass(frozen=True)
class Edge:
    writer: str
    reader: str
    role: str
    attribution: float  # first-order nats of slice loss the edge carries
    patched: float | None = None  # exact nats of slice loss when the edge alone is ablated (None: not measured)


@dataclass(frozen=True)
class Circuit:
    checkpoint: str
    slice: str
    min_effect: float
    min_attribution: float
    channels: list[CircuitChannel]
    edges: list[Edge]
    faithfulness: float | None  # share of the slice's behaviour kept with every other channel mean-ablated

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_networkx(self):
        """A ``networkx.DiGraph``: a node per channel (attributes as in :class:`CircuitChannel`), an edge per
        writer -> reader with ``roles`` (list), ``attribution`` (summed over roles),
        ``role_attribution`` and ``role_patched`` (role -> its attribution, its patched effect or None)."""
        import networkx

        graph = networkx.DiGraph(
            checkpoint=self.checkpoint,
            slice=self.slice,
            min_effect=self.min_effect,
            min_attribution=self.min_attribution,
            faithfulness=self.faithfulness,
        )
        for channel in self.channels:
            graph.add_node(channel.name, **{k: v for k, v in asdict(channel).items() if k != "name"})
        for edge in self.edges:
            if not graph.has_edge(edge.writer, edge.reader):
                graph.add_edge(
                    edge.writer, edge.reader, roles=[], attribution=0.0, role_attribution={}, role_patched={}
                )
            data = graph.edges[edge.writer, edge.reader]
            data["roles"].append(edge.role)
            data["attribution"] += edge.attribution
            data["role_attribution"][edge.role] = edge.attribution
            data["role_patched"][edge.role] = edge.patched
        return graph

    def to_graphml(self, path: str | Path) -> None:
        """Write the circuit as GraphML (:func:`write_graphml`): a node per channel with ``order``,
        ``kind``, ``layer``, ``head``, ``effect`` and ``fidelity``; an edge per writer -> reader with
        ``roles`` (comma-separated), ``attribution`` (summed over roles) and per role
        ``attribution_<role>`` and ``patched_<role>``; the circuit's settings on the graph."""
        import networkx

        graph = networkx.DiGraph(
            checkpoint=self.checkpoint,
            slice=self.slice,
            min_effect=float(self.min_effect),
            min_attribution=float(self.min_attribution),
            faithfulness=self.faithfulness,
        )
        for channel in self.channels:
            graph.add_node(channel.name, **{k: v for k, v in asdict(channel).items() if k != "name"})
        for writer, reader, data in self.to_networkx().edges(data=True):
            graph.add_edge(
                writer,
                reader,
                roles=",".join(data["roles"]),
                attribution=float(data["attribution"]),
                **{f"attribution_{role}": float(value) for role, value in data["role_attribution"].items()},
                **{f"patched_{role}": value for role, value in data["role_patched"].items()},
            )
        write_graphml(graph, path)


def write_graphml(graph, path: str | Path) -> None:
    """Write a networkx ``graph`` as GraphML (Gephi, Cytoscape, yEd read it), every attribute typed
    by its values. GraphML has no null: an attribute without a value (a head index of an MLP, a
    patched effect not measured) is left out of that node, edge or graph."""
    import networkx

    def present(values: dict) -> dict:
        return {k: v for k, v in values.items() if v is not None}

    kept = graph.__class__(**present(graph.graph))
    kept.add_nodes_from((node, present(data)) for node, data in graph.nodes(data=True))
    if graph.is_multigraph():
        kept.add_edges_from((a, b, key, present(data)) for a, b, key, data in graph.edges(keys=True, data=True))
    else:
        kept.add_edges_from((a, b, present(data)) for a, b, data in graph.edges(data=True))
    networkx.write_graphml(kept, str(path))


def fetch_circuit(
    driver: neo4j.Driver, database: str, checkpoint: str, slice_name: str, min_effect: float, min_attribution: float
) -> Circuit:
    """The circuit from the catalog; a :class:`UserError` names what is missing when it is empty."""
    library = queries.library()
    placed = {
        row["channel"]: row
        for row in queries.run(driver, database, library["checkpoint_channels"], {"checkpoint": checkpoint})
    }
    if not placed:
        raise UserError(
            f"No complete checkpoint {checkpoint!r} in the catalog; `circuit-atlas query catalog_overview` lists them."
        )
    rows = queries.run(
        driver,
        database,
        library["circuit"],
        {"checkpoint": checkpoint, "slice": slice_name, "min_effect": min_effect, "min_attribution": min_attribution},
    )
    if not rows:
        raise UserError(
            f"No channel of {checkpoint} raises the loss of slice {slice_name!r} by {min_effect} nats "
            "or more: check the slice name (one of the names given to `ingest --data`) or lower "
            "--min-effect."
        )
    effects = {row["writer"]: row["writer_effect"] for row in rows}
    channels = [
        CircuitChannel(
            name,
            placed[name]["order"],
            placed[name]["kind"],
            placed[name]["layer"],
            placed[name]["head"],
            effect,
            placed[name]["fidelity"],
        )
        for name, effect in effects.items()
    ]
    edges = [
        Edge(row["writer"], row["reader"], row["role"], row["attribution"], row["patched"])
        for row in rows
        if row["reader"]
    ]
    return Circuit(checkpoint, slice_name, min_effect, min_attribution, channels, edges, rows[0]["faithfulness"])
