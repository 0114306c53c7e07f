"""Ground truth for edge scores: path patching on a Hugging Face GPT-NeoX model (the induction
reference models), with its own forward and plain PyTorch hooks, no catalog code.

The effect of the edge from head A to a read role (q, k or v) of a later head B, on prompts
``tokens``: the mean over prompts of the next-token loss when only B's role reads the residual
stream with A's output replaced by its baseline, minus the clean loss. A's output is its columns of
the attention's ``dense`` input (its z) through ``dense``; the baseline of z is its mean over the
prompts at each position (the catalog's default ablation); B's role is recomputed from its
layer's LayerNorm of the patched stream through its own rows of ``query_key_value``, and every
later layer computes on as usual. :func:`ablated_head_edges_loss` patches a set of edges at once.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

ROLES = ("q", "k", "v")  # the order of a head's rows in GPT-NeoX's query_key_value


def head_edge_effects(checkpoint: Path, tokens: Tensor) -> dict[tuple[str, str, str], float]:
    """Per head -> head edge ``(writer, reader, role)``, e.g. ``("L0H0", "L1H0", "k")``, its
    patched effect in nats (positive: the edge helps) on ``tokens`` [prompts, positions]."""
    patching = _Patching(checkpoint, tokens)
    layers, H = len(patching.layers), patching.heads
    return {
        (f"L{la}H{ha}", f"L{lb}H{hb}", role): patching.loss({(lb, hb, role): patching.change(la, ha)}) - patching.clean
        for la in range(layers)
        for ha in range(H)
        for lb in range(la + 1, layers)
        for hb in range(H)
        for role in ROLES
    }


def ablated_head_edges_loss(checkpoint: Path, tokens: Tensor, edges: Collection[tuple[str, str, str]]) -> float:
    """The mean next-token loss on ``tokens`` with every head -> head edge of ``edges`` patched at
    once: each reader role reads the stream plus the changes of all its patched writers. A writer's
    change is taken from the clean run, so an edge into a head that itself writes a patched edge is
    refused (its output would move)."""
    patching = _Patching(checkpoint, tokens)
    readers = {reader for _, reader, _ in edges}
    moved = sorted({writer for writer, _, _ in edges} & readers)
    if moved:
        raise ValueError(f"{moved[0]} both reads and writes patched edges; this reference takes clean writers only")
    changes: dict[tuple[int, int, str], Tensor] = {}
    for writer, reader, role in edges:
        (la, ha), (lb, hb) = _head(writer), _head(reader)
        key = (lb, hb, role)
        changes[key] = changes.get(key, 0) + patching.change(la, ha)
    return patching.loss(changes)


def _head(name: str) -> tuple[int, int]:
    layer, head = name[1:].split("H")
    return int(layer), int(head)


class _Patching:
    """A GPT-NeoX model's clean run on ``tokens``: its loss, each head's z, and runs with head roles
    reading a changed stream."""

    def __init__(self, checkpoint: Path, tokens: Tensor):
        from transformers import GPTNeoXForCausalLM

        self.model = GPTNeoXForCausalLM.from_pretrained(checkpoint).float().eval()
        if self.model.config.use_parallel_residual:
            raise ValueError("path patching here follows a sequential GPT-NeoX block (use_parallel_residual false)")
        self.tokens, self.layers = tokens, self.model.gpt_neox.layers
        self.heads = self.model.config.num_attention_heads
        self.dh = self.model.config.hidden_size // self.heads
        self.z: dict[int, Tensor] = {}

        def record_z(l: int):
            def hook(dense, inputs):
                self.z[l] = inputs[0].detach()

            return hook

        self.clean = self._run(
            [layer.attention.dense.register_forward_pre_hook(record_z(l)) for l, layer in enumerate(self.layers)]
        )

    def _run(self, handles: list) -> float:
        try:
            with torch.no_grad():
                logits = self.model(input_ids=self.tokens).logits
        finally:
            for handle in handles:
                handle.remove()
        per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), self.tokens[:, 1:], reduction="none")
        return float(per_token.mean(1).mean())

    def change(self, layer: int, head: int) -> Tensor:
        """The head's baseline output minus its clean output: its z's mean over the prompts at each
        position, through its columns of ``dense``."""
        cols = slice(head * self.dh, (head + 1) * self.dh)
        z = self.z[layer][..., cols]
        return (z.mean(0, keepdim=True) - z) @ self.layers[layer].attention.dense.weight.detach()[:, cols].T

    def loss(self, changes: dict[tuple[int, int, str], Tensor]) -> float:
        """The loss with each ``(layer, head, role)`` reading its layer's stream plus its change."""
        handles = []
        for l in sorted({l for l, _, _ in changes}):
            layer, mine = self.layers[l], {(h, r): c for (ll, h, r), c in changes.items() if ll == l}
            stream: dict[str, Tensor] = {}
            handles.append(layer.input_layernorm.register_forward_pre_hook(_recorder(stream)))
            handles.append(
                layer.attention.query_key_value.register_forward_hook(_patcher(layer, stream, mine, self.dh))
            )
        return self._run(handles)


def _recorder(stream: dict[str, Tensor]):
    def hook(norm, inputs):
        stream["resid"] = inputs[0]

    return hook


def _patcher(layer, stream: dict[str, Tensor], changes: dict[tuple[int, str], Tensor], dh: int):
    """``query_key_value``'s output with each (head, role) of ``changes`` computed from the stream plus its change."""

    def hook(linear, inputs, output):
        norm = layer.input_layernorm  # called as functions: the modules' own hooks would fire again
        output = output.clone()
        for (head, role), change in changes.items():
            x = F.layer_norm(stream["resid"] + change, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            rows = slice(head * 3 * dh + ROLES.index(role) * dh, head * 3 * dh + (ROLES.index(role) + 1) * dh)
            output[..., rows] = F.linear(x, linear.weight[rows], linear.bias[rows])
        return output

    return hook
