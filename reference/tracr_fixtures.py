"""Compiled models as exact ground truth: RASP programs compiled by tracr, shipped as
TransformerLens-native checkpoints with the residual layout tracr gave them.

tracr (DeepMind's RASP compiler, ``tracr-pypi``, on JAX) turns a program into transformer weights
in which every variable has residual dimensions of its own, labelled ``name:value``. So which
component writes and reads which dimensions is known exactly, and an edge between two channels is
true exactly when the reader's weights read a dimension the writer writes. This script (needs the
optional extra ``tracr``: ``pip install circuit-atlas[tracr]``; CI never runs it) compiles each
program of :data:`PROGRAMS` and writes, under ``reference/tracr/<program>/``:

- ``config.json`` + ``weights.pt``: the model as a HookedTransformer checkpoint, by the known
  tracr -> TransformerLens mapping: token and position embeddings as ``W_E``/``W_pos``, per layer
  the attention heads' query/key/value/output maps split per head (``W_Q[h] = query[:, h]``) and
  the MLP's two linear maps, no normalisation (``normalization_type: null``), bidirectional
  attention, and an unembedding ``W_U`` that reads the output variable's dimensions, one class per
  value (``d_vocab_out``);
- ``layout.json``: the residual labels, the input and output vocabularies, and per channel
  (``L{l}H{h}``, ``L{l}.mlp``, ``embed``, ``pos_embed``, ``unembed``) the residual dimensions its
  weights read (per role) and write, from tracr's own per-block spaces and matrices (a dimension
  counts where the block's matrix has a non-zero row or column for it); plus sample inputs with
  tracr's own output (its unembedded output vector at every position);
- ``task.jsonl``: a task slice (one prompt per row, ``label_loss`` of tracr's output at every
  position after BOS), prompts of different lengths.

Run: ``python -m circuit_atlas.reference.tracr_fixtures [--out reference/tracr]``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

FIXTURES = Path(__file__).parent / "tracr"
BOS, PAD = "BOS", "PAD"


@dataclass(frozen=True)
class Program:
    name: str
    make: Callable  # () -> rasp.SOp
    vocab: tuple
    max_seq_len: int
    unique: bool = False  # inputs without repeated tokens (sort_unique needs them)


def _programs() -> dict[str, Program]:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return {
        p.name: p
        for p in (
            Program("reverse", lambda: lib.make_reverse(rasp.tokens), (1, 2, 3, 4), 5),
            Program("sort", lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens), (1, 2, 3, 4, 5), 5, unique=True),
            Program("hist", lib.make_hist, (1, 2, 3), 5),
        )
    }


PROGRAMS = ("reverse", "sort", "hist")


def compile_program(program: Program):
    """tracr's craft model (per-block spaces) and assembled model (weights) of ``program``."""
    from tracr.compiler import (
        basis_inference,
        craft_graph_to_model,
        craft_model_to_transformer,
        expr_to_craft_graph,
        rasp_to_graph,
    )
    from tracr.craft import bases
    from tracr.rasp import rasp

    sop = program.make()
    extracted = rasp_to_graph.extract_rasp_graph(sop)
    basis_inference.infer_bases(extracted.graph, extracted.sink, set(program.vocab), program.max_seq_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        extracted.graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100
    )
    craft = craft_graph_to_model.craft_graph_to_model(extracted.graph, extracted.sources)
    assembled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft,
        graph=extracted.graph,
        sink=extracted.sink,
        max_seq_len=program.max_seq_len,
        compiler_bos=BOS,
        compiler_pad=PAD,
        causal=False,
    )
    return sop, craft, assembled


def _labels(space, mask=None) -> list[str]:
    return [str(d) for i, d in enumerate(space.basis) if mask is None or mask[i]]


def _nonzero(matrix: np.ndarray, axis: int) -> np.ndarray:
    """Which rows (axis 1) or columns (axis 0) of ``matrix`` have a non-zero entry."""
    return np.abs(np.asarray(matrix)).max(axis=axis) > 0


def layout(craft, assembled, sop) -> dict:
    """Per channel, the residual labels its weights read (per role) and write."""
    from tracr.compiler.assemble import _get_model_config_and_module_names
    from tracr.craft import transformers

    residual = list(assembled.residual_labels)
    params = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in assembled.params.items()}
    channels = {
        "embed": {"out": [residual[i] for i in np.flatnonzero(_nonzero(params["token_embed"]["embeddings"], 0))]},
        "pos_embed": {"out": [residual[i] for i in np.flatnonzero(_nonzero(params["pos_embed"]["embeddings"], 0))]},
    }
    _, module_names = _get_model_config_and_module_names(craft)
    for name, block in zip(module_names, craft.blocks):
        layer = int(name.split("layer_")[1].split("/")[0])
        if isinstance(block, transformers.MLP):
            channels[f"L{layer}.mlp"] = {
                "in": _labels(block.fst.input_space, _nonzero(block.fst.matrix, 1)),
                "out": _labels(block.snd.output_space, _nonzero(block.snd.matrix, 0)),
            }
            continue
        for h, head in enumerate(block.as_multi().heads()):
            channels[f"L{layer}H{h}"] = {
                "q": _labels(head.w_qk.left_space, _nonzero(head.w_qk.matrix, 1)),
                "k": _labels(head.w_qk.right_space, _nonzero(head.w_qk.matrix, 0)),
                "v": _labels(head.w_ov.input_space, _nonzero(head.w_ov.matrix, 1)),
                "out": _labels(head.w_ov.output_space, _nonzero(head.w_ov.matrix, 0)),
            }
    outputs = sorted(assembled.output_encoder.encoding_map, key=assembled.output_encoder.encoding_map.get)
    channels["unembed"] = {"in": [f"{sop.label}:{value}" for value in outputs]}
    return {
        "residual": residual,
        "input_vocab": {str(k): v for k, v in assembled.input_encoder.encoding_map.items()},
        "output_vocab": [str(v) for v in outputs],
        "channels": channels,
    }


def transformer_lens_checkpoint(assembled, program: Program, sop) -> tuple[dict, dict[str, torch.Tensor]]:
    """The HookedTransformerConfig fields and state dict of the compiled model (module docstring)."""
    cfg = assembled.model_config
    params = {
        k: {n: torch.tensor(np.asarray(v), dtype=torch.float32) for n, v in d.items()}
        for k, d in assembled.params.items()
    }
    residual = list(assembled.residual_labels)
    d, H, dh = len(residual), cfg.num_heads, cfg.key_size
    outputs = sorted(assembled.output_encoder.encoding_map, key=assembled.output_encoder.encoding_map.get)
    W_U = torch.zeros(d, len(outputs))
    for j, value in enumerate(outputs):
        W_U[residual.index(f"{sop.label}:{value}"), j] = 1.0
    state = {
        "embed.W_E": params["token_embed"]["embeddings"],
        "pos_embed.W_pos": params["pos_embed"]["embeddings"],
        "unembed.W_U": W_U,
        "unembed.b_U": torch.zeros(len(outputs)),
    }
    for l in range(cfg.num_layers):
        attn, mlp = f"transformer/layer_{l}/attn/", f"transformer/layer_{l}/mlp/"
        for ours, theirs in (("Q", "query"), ("K", "key"), ("V", "value")):
            state[f"blocks.{l}.attn.W_{ours}"] = params[attn + theirs]["w"].reshape(d, H, dh).permute(1, 0, 2)
            state[f"blocks.{l}.attn.b_{ours}"] = params[attn + theirs]["b"].reshape(H, dh)
        state[f"blocks.{l}.attn.W_O"] = params[attn + "linear"]["w"].reshape(H, dh, d)
        state[f"blocks.{l}.attn.b_O"] = params[attn + "linear"]["b"]
        state[f"blocks.{l}.mlp.W_in"] = params[mlp + "linear_1"]["w"]
        state[f"blocks.{l}.mlp.b_in"] = params[mlp + "linear_1"]["b"]
        state[f"blocks.{l}.mlp.W_out"] = params[mlp + "linear_2"]["w"]
        state[f"blocks.{l}.mlp.b_out"] = params[mlp + "linear_2"]["b"]
    config = {
        "model_name": f"tracr-{program.name}",
        "original_architecture": "tracr",
        "n_layers": cfg.num_layers,
        "d_model": d,
        "n_heads": H,
        "d_head": dh,
        "d_mlp": cfg.mlp_hidden_size,
        "act_fn": "relu",
        "n_ctx": program.max_seq_len + 1,
        "d_vocab": len(assembled.input_encoder.encoding_map),
        "d_vocab_out": len(outputs),
        "normalization_type": None,
        "attention_dir": "bidirectional",
        "positional_embedding_type": "standard",
    }
    return config, {k: v.contiguous() for k, v in state.items()}


def sample_inputs(program: Program, n: int, seed: int) -> list[list]:
    """``n`` random inputs of lengths 2 .. max_seq_len (tokens without repeats when ``unique``)."""
    rng = random.Random(seed)
    inputs = []
    for _ in range(n):
        length = rng.randint(2, program.max_seq_len)
        if program.unique:
            inputs.append(rng.sample(program.vocab, length))
        else:
            inputs.append([rng.choice(program.vocab) for _ in range(length)])
    return inputs


def tracr_outputs(assembled, inputs: list, W_U: torch.Tensor) -> tuple[list, np.ndarray]:
    """tracr's decoded output after BOS, and its output read off the final residual stream
    ``[pos, classes]`` (tracr takes the argmax of exactly these: ``residual @ W_U``)."""
    result = assembled.apply([BOS, *inputs])
    return result.decoded[1:], (np.asarray(result.transformer_output)[0] @ W_U.numpy())[1:]


def write_fixture(name: str, out: Path, n_slice: int = 192, n_samples: int = 8) -> Path:
    program = _programs()[name]
    sop, craft, assembled = compile_program(program)
    config, state = transformer_lens_checkpoint(assembled, program, sop)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    torch.save(state, folder / "weights.pt")
    fixture = layout(craft, assembled, sop)
    encode = assembled.input_encoder.encoding_map
    classes = {
        v: i
        for i, v in enumerate(
            sorted(assembled.output_encoder.encoding_map, key=assembled.output_encoder.encoding_map.get)
        )
    }
    fixture["samples"] = []
    for inputs in sample_inputs(program, n_samples, seed=1):
        decoded, vectors = tracr_outputs(assembled, inputs, state["unembed.W_U"])
        fixture["samples"].append(
            {
                "tokens": [encode[t] for t in [BOS, *inputs]],
                "output": [classes[v] for v in decoded],
                "logits": vectors.round(6).tolist(),
            }
        )
    (folder / "layout.json").write_text(json.dumps(fixture, indent=1) + "\n")
    with (folder / "task.jsonl").open("w") as rows:
        for inputs in sample_inputs(program, n_slice, seed=2):
            decoded, _ = tracr_outputs(assembled, inputs, state["unembed.W_U"])
            positions = list(range(1, len(inputs) + 1))
            row = {
                "tokens": [encode[t] for t in [BOS, *inputs]],
                "metric": "label_loss",
                "position": positions,
                "label": [classes[v] for v in decoded],
            }
            rows.write(json.dumps(row) + "\n")
    return folder


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=FIXTURES, show_default=True)
@click.option("--program", "names", multiple=True, type=click.Choice(PROGRAMS), help="Default: all.")
def main(out: Path, names: tuple[str, ...]) -> None:
    """Compile the RASP programs with tracr and write their fixtures under OUT."""
    for name in names or PROGRAMS:
        click.echo(f"{name}: {write_fixture(name, out)}")


if __name__ == "__main__":
    main()
