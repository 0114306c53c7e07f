"""Channels: the pieces a model is cut into, in the one order every table, query and printout uses.

Per layer ``l``: every attention head ``L{l}H{h}`` (read roles ``q``, ``k``, ``v``; write role
``out``) and the MLP ``L{l}.mlp`` (read ``in``, write ``out``; none in an attention-only model,
whose stages are numbered as if they were there); before layer 0 the token
embedding ``embed`` and, for learned absolute positions, ``pos_embed`` (write ``out``); after the
last layer the unembedding ``unembed`` (read ``in``).

**Channel order** is the forward order: ``embed, pos_embed, L0H0 .. L0H{H-1}, L0.mlp, L1H0, ...,
unembed`` (a layer's heads by head index, then its MLP). :func:`model_channels` defines it, every
channel carries its position as ``Channel.order``, the artifact stores it in ``blocks.order``, the
catalog on ``Block.order``, and every query sorts by it.

A writer feeds every reader at a later *stage*: ``embed < L0 attn < L0 mlp < L1 attn < ... <
unembed``; with a parallel block (GPT-J, parallel GPT-NeoX) the MLP of a layer shares the
attention's stage, so it does not read that layer's heads.

:class:`ChannelLayout` fixes the indices that score matrices are laid out by: rows are the
reader roles (:attr:`ChannelLayout.readers`), columns the writers (:attr:`ChannelLayout.writers`),
both in channel order, and it names the rows and columns of each layer's heads and MLP so that
no other module relies on an unstated order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .model_adapter import ModelSpec

#: Read roles by channel kind, in the order their rows appear in score matrices.
READ_ROLES = {"attn_head": ("q", "k", "v"), "mlp": ("in",), "unembed": ("in",)}
HEAD_READ_ROLES = READ_ROLES["attn_head"]
WRITE_KINDS = ("embed", "pos_embed", "attn_head", "mlp")
KINDS = ("embed", "pos_embed", "attn_head", "mlp", "unembed")
#: The label a Block node carries besides ``Block`` (for Cypher and the Browser stylesheet).
KIND_LABELS = {
    "embed": "Embedding",
    "pos_embed": "Embedding",
    "attn_head": "AttentionHead",
    "mlp": "MLP",
    "unembed": "Unembedding",
}


@dataclass(frozen=True)
class Channel:
    kind: str  # one of KINDS
    layer: int  # -1 for embeddings, n_layers for the unembedding
    head: int | None
    name: str
    stage: int  # position in the forward order of stages (see module docstring)
    order: int  # position in the channel order

    @property
    def writes(self) -> bool:
        return self.kind in WRITE_KINDS

    @property
    def read_roles(self) -> tuple[str, ...]:
        return READ_ROLES.get(self.kind, ())

    @property
    def roles(self) -> tuple[str, ...]:
        """Read roles, then ``out`` for a writer: the channel's subspaces."""
        return (*self.read_roles, *(("out",) if self.writes else ()))


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def mlp_name(layer: int) -> str:
    return f"L{layer}.mlp"


def model_channels(spec: ModelSpec) -> list[Channel]:
    """Every channel of the model, in channel order."""
    mlp_offset = 0 if spec.parallel_attn_mlp else 1
    specs: list[tuple[str, int, int | None, str, int]] = [("embed", -1, None, "embed", 0)]
    if spec.positional == "standard":
        specs.append(("pos_embed", -1, None, "pos_embed", 0))
    for layer in range(spec.n_layers):
        attn_stage = 1 + 2 * layer
        specs += [("attn_head", layer, h, head_name(layer, h), attn_stage) for h in range(spec.n_heads)]
        if spec.has_mlp:
            specs.append(("mlp", layer, None, mlp_name(layer), attn_stage + mlp_offset))
    specs.append(("unembed", spec.n_layers, None, "unembed", 2 * spec.n_layers + 1))
    return [Channel(*fields, order=i) for i, fields in enumerate(specs)]


def feeds(writer: Channel, reader: Channel) -> bool:
    """Whether ``writer``'s output reaches ``reader``'s input through the residual stream."""
    return writer.writes and bool(reader.read_roles) and writer.stage < reader.stage


@dataclass(frozen=True)
class ReadRole:
    channel: Channel
    role: str

    @property
    def key(self) -> str:
        return f"{self.channel.name}/{self.role}"


class ChannelLayout:
    """The model's channels and the row (reader role) and column (writer) indices of scores.

    ``readers``: for each channel in order, its read roles in :data:`READ_ROLES` order, so a
    layer's head rows are ``q, k, v`` of head 0, then of head 1, ...; then its MLP ``in``; the
    unembedding's ``in`` is the last row. ``writers``: the writing channels in order.
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.channels = model_channels(spec)
        self.readers = [ReadRole(c, role) for c in self.channels for role in c.read_roles]
        self.writers = [c for c in self.channels if c.writes]
        self.by_name = {c.name: c for c in self.channels}
        self._reader_row = {(r.channel.name, r.role): i for i, r in enumerate(self.readers)}
        self._writer_column = {c.name: j for j, c in enumerate(self.writers)}

    @property
    def unembed(self) -> Channel:
        return self.channels[-1]

    def heads(self, layer: int) -> list[Channel]:
        return [self.by_name[head_name(layer, h)] for h in range(self.spec.n_heads)]

    def mlp(self, layer: int) -> Channel:
        return self.by_name[mlp_name(layer)]

    @cached_property
    def mlps(self) -> list[Channel]:
        """The MLPs, one per layer in layer order (``mlps[l]`` is layer ``l``'s), or none."""
        return [c for c in self.channels if c.kind == "mlp"]

    def reader_row(self, channel: Channel, role: str) -> int:
        return self._reader_row[(channel.name, role)]

    def head_reader_rows(self, layer: int) -> slice:
        """Rows of layer ``layer``'s head read roles, one range: q, k, v of head 0, then of head 1, ..."""
        first = self.reader_row(self.heads(layer)[0], HEAD_READ_ROLES[0])
        return slice(first, first + len(HEAD_READ_ROLES) * self.spec.n_heads)

    def writer_column(self, channel: Channel) -> int:
        return self._writer_column[channel.name]

    def head_writer_columns(self, layer: int) -> slice:
        """Columns of layer ``layer``'s heads, one range in head order."""
        first = self.writer_column(self.heads(layer)[0])
        return slice(first, first + self.spec.n_heads)

    @cached_property
    def feeds_mask(self) -> Tensor:
        """[reader role, writer] bool: True where the writer feeds the reader."""
        return torch.tensor([[feeds(w, r.channel) for w in self.writers] for r in self.readers], dtype=torch.bool)

    def writers_before(self, stage: int) -> int:
        """How many leading writer columns feed a reader at ``stage`` (writers are in stage order)."""
        return sum(1 for w in self.writers if w.stage < stage)
