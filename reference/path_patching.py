"""Ground truth for edge scores: path patching on a Hugging Face GPT-NeoX model (the induction
reference models), with its own forward and plain PyTorch hooks, no catalog code.

The effect of the edge from head A to a read role (q, k or v) of a later head B, on prompts
``tokens``: the mean over prompts of the next-token loss when only B's role reads the residual
stream with A's output replaced by its baseline, minus the clean loss. A's output is its columns of
the attention's ``dense`` input (its z) through ``dense``; the baseline of z is its mean over the
prompts at each position (the catalog's default ablation); B's role is recomputed from its
layer's LayerNorm of the patched stream through its own rows of ``query_key_value``, and every
later layer computes on as usual.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

ROLES = ("q", "k", "v")  # the order of a head's rows in GPT-NeoX's query_key_value


def head_edge_effects(checkpoint: Path, tokens: Tensor) -> dict[tuple[str, str, str], float]:
    """Per head -> head edge ``(writer, reader, role)``, e.g. ``("L0H0", "L1H0", "k")``, its
    patched effect in nats (positive: the edge helps) on ``tokens`` [prompts, positions]."""
    from transformers import GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM.from_pretrained(checkpoint).float().eval()
    if model.config.use_parallel_residual:
        raise ValueError("path patching here follows a sequential GPT-NeoX block (use_parallel_residual false)")
    layers, H = model.gpt_neox.layers, model.config.num_attention_heads
    dh = model.config.hidden_size // H

    def loss(handles: list) -> float:
        try:
            with torch.no_grad():
                logits = model(input_ids=tokens).logits
        finally:
            for handle in handles:
                handle.remove()
        per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        return float(per_token.mean(1).mean())

    clean_z: dict[int, Tensor] = {}

    def record_z(l: int):
        def hook(dense, inputs):
            clean_z[l] = inputs[0].detach()

        return hook

    clean = loss([layers[l].attention.dense.register_forward_pre_hook(record_z(l)) for l in range(len(layers))])
    effects = {}
    for la in range(len(layers)):
        dense = layers[la].attention.dense.weight.detach()  # [d, H dh]
        for ha in range(H):
            cols = slice(ha * dh, (ha + 1) * dh)
            z = clean_z[la][..., cols]
            change = (z.mean(0, keepdim=True) - z) @ dense[:, cols].T  # baseline output - clean output
            for lb in range(la + 1, len(layers)):
                for hb in range(H):
                    for r, role in enumerate(ROLES):
                        effects[(f"L{la}H{ha}", f"L{lb}H{hb}", role)] = (
                            _patched_loss(loss, layers[lb], change, hb, r, dh) - clean
                        )
    return effects


def _patched_loss(loss, layer, change: Tensor, head: int, role: int, dh: int) -> float:
    """The loss with ``layer``'s ``head`` role ``role`` reading the stream plus ``change``."""
    stream: dict[str, Tensor] = {}

    def record_stream(norm, inputs):
        stream["resid"] = inputs[0]

    def patch(linear, inputs, output):
        norm = layer.input_layernorm  # called as functions: the modules' own hooks would fire again
        x = F.layer_norm(stream["resid"] + change, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        patched = F.linear(x, linear.weight, linear.bias)
        rows = slice(head * 3 * dh + role * dh, head * 3 * dh + (role + 1) * dh)
        output = output.clone()
        output[..., rows] = patched[..., rows]
        return output

    return loss(
        [
            layer.input_layernorm.register_forward_pre_hook(record_stream),
            layer.attention.query_key_value.register_forward_hook(patch),
        ]
    )
