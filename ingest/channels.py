"""Channels: the pieces a model is cut into, with their roles and forward order.

Per layer ``l``: every attention head ``L{l}H{h}`` (read roles ``q``, ``k``, ``v``; write role
``out``) and the MLP ``L{l}.mlp`` (read ``in``, write ``out``); before layer 0 the token
embedding ``embed`` and, for learned absolute positions, ``pos_embed`` (write ``out``); after the
last layer the unembedding ``unembed`` (read ``in``).

Forward order decides which writer can feed which reader: a writer feeds every reader at a
later *stage*, where stages are ``embed < L0 attn < L0 mlp < L1 attn < ... < unembed``; with a
parallel block (GPT-J, parallel GPT-NeoX) the MLP of a layer shares the attention's stage, so
it does not read that layer's heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model_adapter import ModelSpec

READ_ROLES = {"attn_head": ("q", "k", "v"), "mlp": ("in",), "unembed": ("in",)}
WRITE_KINDS = ("embed", "pos_embed", "attn_head", "mlp")
# The catalog labels a Block node with its kind too (for Cypher and the Browser stylesheet).
KIND_LABELS = {"embed": "Embedding", "pos_embed": "Embedding", "attn_head": "AttentionHead", "mlp": "MLP",
               "unembed": "Unembedding"}


@dataclass(frozen=True)
class Channel:
    kind: str  # embed | pos_embed | attn_head | mlp | unembed
    layer: int  # -1 for embeddings, n_layers for the unembedding
    head: int | None
    name: str
    stage: int  # position in the forward order (see module docstring)

    @property
    def writes(self) -> bool:
        return self.kind in WRITE_KINDS

    @property
    def read_roles(self) -> tuple[str, ...]:
        return READ_ROLES.get(self.kind, ())


def model_channels(spec: ModelSpec) -> list[Channel]:
    """Every channel of the model, in forward order (heads of a layer in head order)."""
    mlp_offset = 0 if spec.parallel_attn_mlp else 1
    channels = [Channel("embed", -1, None, "embed", 0)]
    if spec.positional == "standard":
        channels.append(Channel("pos_embed", -1, None, "pos_embed", 0))
    for layer in range(spec.n_layers):
        attn_stage = 1 + 2 * layer
        channels += [Channel("attn_head", layer, h, f"L{layer}H{h}", attn_stage) for h in range(spec.n_heads)]
        channels.append(Channel("mlp", layer, None, f"L{layer}.mlp", attn_stage + mlp_offset))
    channels.append(Channel("unembed", spec.n_layers, None, "unembed", 2 * spec.n_layers + 1))
    return channels


def feeds(writer: Channel, reader: Channel) -> bool:
    """Whether ``writer``'s output reaches ``reader``'s input through the residual stream."""
    return writer.writes and bool(reader.read_roles) and writer.stage < reader.stage
