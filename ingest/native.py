"""TransformerLens-native checkpoints: a ``HookedTransformerConfig`` JSON plus a state dict.

Most small models with published circuits were saved by TransformerLens 3.x's
``HookedTransformer`` (``torch.save(model.state_dict())``, keys such as ``blocks.0.attn.W_Q``,
per-head shapes). TransformerLens 4 no longer has that class, so this module reads such a
checkpoint itself and processes it the way ``HookedTransformer.from_pretrained`` did by default
(and the bridge's compatibility mode does for Hugging Face models), so both sources give the
runner (:mod:`.transformer`) the same numerics:

1. grouped K/V weights (``_W_K``, ``_b_K``, ...) are expanded to every query head;
2. **fold normalisation**: ``norm(r) = x̂ w + b`` feeding ``x W + c`` becomes ``x̂ (w ⊙ W) + (c + b W)``,
   for ``ln1`` into W_Q/W_K/W_V, ``ln2`` into W_in (and W_gate), ``ln_final`` into W_U; for LN
   the folded reading weights are then centred over d_model (x̂ is orthogonal to the all-ones
   vector, so nothing changes);
3. **centre writing weights** (LN models): W_E, W_pos, W_O, b_O, W_out, b_out minus their mean
   over d_model, which the next LayerNorm removes anyway;
4. **centre the unembedding**: W_U and b_U minus their mean over the output vocabulary (a
   constant added to every logit of a position; softmax ignores it);
5. **fold value biases**: ``b_O += Σ_h b_V[h] W_O[h]`` and ``b_V = 0`` (attention rows sum to 1).

Every step is exact: the processed model computes the same log-probabilities. The weights are
read on the CPU (``map_location="cpu"``, so a checkpoint saved from a GPU loads anywhere), may be
wrapped in a dict with other entries (``{"state_dict": ..., "step": ...}``), and are checked
against the config before anything runs: an unknown config field or value, a missing or
unexpected key, a shape the config does not imply, a shape field that is not a whole number, weights
that are not floating point, or NaN/inf weights is one :class:`UserError`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .transformer import ACTIVATIONS, TransformerConfig

#: HookedTransformerConfig fields the runner interprets, with TransformerLens 3.x defaults.
FIELDS = {
    "n_layers": None,
    "d_model": None,
    "n_ctx": None,
    "d_head": None,
    "n_heads": -1,
    "d_mlp": None,
    "act_fn": None,
    "d_vocab": -1,
    "d_vocab_out": -1,
    "eps": 1e-5,
    "use_attn_scale": True,
    "attn_scale": -1.0,
    "normalization_type": "LN",
    "attention_dir": "causal",
    "attn_only": False,
    "positional_embedding_type": "standard",
    "final_rms": False,
    "parallel_attn_mlp": False,
    "rotary_dim": None,
    "rotary_base": 10000,
    "rotary_adjacent_pairs": False,
    "gated_mlp": False,
    "n_key_value_heads": None,
    "model_name": "custom",
    "tokenizer_name": None,
    "original_architecture": None,
}
#: Fields that change how a HookedTransformer is built or hooked, not what it computes.
BOOKKEEPING = {
    "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "use_hook_tokens",
    "from_checkpoint", "checkpoint_index", "checkpoint_label_type", "checkpoint_value", "init_mode",
    "device", "n_devices", "seed", "initializer_range", "init_weights", "n_params", "default_prepend_bos",
    "tokenizer_prepends_bos", "dtype", "trust_remote_code", "ungroup_grouped_query_attention",
    "tie_word_embeddings", "relative_attention_max_distance", "relative_attention_num_buckets",
    "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor", "NTK_by_parts_factor",
    "NTK_original_ctx_len", "experts_per_token",
}  # fmt: skip
#: Features the runner does not have: allowed only at their off value.
UNSUPPORTED = {
    "use_local_attn": False,
    "window_size": None,
    "attn_types": None,
    "scale_attn_by_inverse_layer_idx": False,
    "use_NTK_by_parts_rope": False,
    "post_embedding_ln": False,
    "use_normalization_before_and_after": False,
    "attn_scores_soft_cap": -1.0,
    "output_logits_soft_cap": -1.0,
    "num_experts": None,
    "use_qk_norm": False,
    "load_in_4bit": False,
    "decoder_start_token_id": None,
}
#: normalization_type -> (the folded norm, its affine parameters in the state dict).
NORMS = {
    "LN": ("LN", ("w", "b")),
    "LNPre": ("LN", ()),
    "RMS": ("RMS", ("w",)),
    "RMSPre": ("RMS", ()),
    None: ("none", ()),
}
#: Buffers a HookedTransformer state dict carries that hold no weights.
BUFFER_SUFFIXES = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")


def is_native_config(source: str) -> bool:
    """Whether ``source`` names a TransformerLens config (a ``.json`` file) rather than a HF model."""
    return str(source).endswith(".json")


def read_config(path: Path) -> dict:
    """The config's fields with TransformerLens defaults filled in, checked (see :data:`FIELDS`)."""
    if not path.is_file():
        raise UserError(f"TransformerLens config {path} does not exist.")
    try:
        given = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not JSON ({error}); give a HookedTransformerConfig saved as JSON.") from error
    if not isinstance(given, dict):
        raise UserError(f"{path} holds a JSON {type(given).__name__}, not an object of HookedTransformerConfig fields.")
    unknown = sorted(set(given) - set(FIELDS) - BOOKKEEPING - set(UNSUPPORTED))
    if unknown:
        raise UserError(f"{path}: unknown HookedTransformerConfig field(s) {', '.join(unknown)}.")
    used = sorted(k for k, off in UNSUPPORTED.items() if given.get(k, off) not in (off, False, None, -1.0))
    if used:
        raise UserError(f"{path}: Circuit Atlas cannot run {', '.join(f'{k}={given[k]!r}' for k in used)}.")
    cfg = {**FIELDS, **{k: v for k, v in given.items() if k in FIELDS}}
    missing = [k for k in ("n_layers", "d_model", "n_ctx", "d_head") if cfg[k] is None] + (
        ["d_vocab"] if cfg["d_vocab"] in (None, -1) else []
    )
    if missing:
        raise UserError(f"{path}: the config needs {', '.join(missing)}.")
    wrong = [f"{k}={v!r} ({words})" for k, v, words in _kind_errors(cfg)]
    if wrong:
        raise UserError(f"{path}: {'; '.join(wrong)}. Fix the config.")
    if cfg["n_heads"] == -1:
        cfg["n_heads"] = cfg["d_model"] // cfg["d_head"]
    if not cfg["attn_only"] and cfg["d_mlp"] is None:
        cfg["d_mlp"] = 4 * cfg["d_model"]
    if cfg["d_vocab_out"] == -1:
        cfg["d_vocab_out"] = cfg["d_vocab"]
    if cfg["rotary_dim"] is None:
        cfg["rotary_dim"] = cfg["d_head"]
    problems = []
    if cfg["normalization_type"] not in NORMS:
        problems.append(f"normalization_type={cfg['normalization_type']!r} (LN, LNPre, RMS, RMSPre or null)")
    if cfg["attention_dir"] not in ("causal", "bidirectional"):
        problems.append(f"attention_dir={cfg['attention_dir']!r} (causal or bidirectional)")
    if cfg["positional_embedding_type"] not in ("standard", "rotary"):
        problems.append(f"positional_embedding_type={cfg['positional_embedding_type']!r} (standard or rotary)")
    if not cfg["attn_only"] and cfg["act_fn"] not in ACTIVATIONS:
        problems.append(f"act_fn={cfg['act_fn']!r} ({', '.join(ACTIVATIONS)})")
    if cfg["n_key_value_heads"] and cfg["n_heads"] % cfg["n_key_value_heads"]:
        problems.append(f"n_key_value_heads={cfg['n_key_value_heads']} (must divide n_heads={cfg['n_heads']})")
    if problems:
        raise UserError(f"{path}: Circuit Atlas cannot run {'; '.join(problems)}.")
    return cfg


#: Shape fields: a whole number >= 1 where given (-1 or null: TransformerLens's derived default).
WHOLE_FIELDS = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out", "rotary_dim")
#: Number fields, finite and > 0.
POSITIVE_FIELDS = ("eps", "rotary_base")


def _kind_errors(cfg: dict) -> list[tuple[str, object, str]]:
    """Fields whose value is not of the kind the runner computes with (a string, a float or 0 for a
    whole number such as ``"n_layers": "2"``, a text ``eps``)."""
    errors = []
    for name in WHOLE_FIELDS:
        value = cfg[name]
        if value not in (None, -1) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            errors.append((name, value, "a whole number >= 1"))
    kv = cfg["n_key_value_heads"]
    if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv < 1):
        errors.append(("n_key_value_heads", kv, "a whole number >= 1, or null"))
    for name in POSITIVE_FIELDS:
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            errors.append((name, value, "a number > 0"))
    return errors


def model_name(path: Path) -> str:
    """The catalog name of a native model: its config's ``model_name``, else the file's stem."""
    try:
        name = json.loads(Path(path).read_text()).get("model_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        name = None
    return name if isinstance(name, str) and name != "custom" else Path(path).stem


def runner_config(cfg: dict) -> TransformerConfig:
    """The runner's config of the processed model."""
    norm = NORMS[cfg["normalization_type"]][0]
    final = "none" if norm == "none" else ("RMS" if cfg["final_rms"] else norm)
    return TransformerConfig(
        n_layers=cfg["n_layers"],
        d_model=cfg["d_model"],
        n_heads=cfg["n_heads"],
        d_head=cfg["d_head"],
        d_mlp=0 if cfg["attn_only"] else cfg["d_mlp"],
        d_vocab=cfg["d_vocab"],
        d_vocab_out=cfg["d_vocab_out"],
        n_ctx=cfg["n_ctx"],
        act_fn=cfg["act_fn"] or "relu",
        normalization=norm,
        final_normalization=final,
        eps=float(cfg["eps"]),
        positional=cfg["positional_embedding_type"],
        rotary_dim=cfg["rotary_dim"] if cfg["positional_embedding_type"] == "rotary" else 0,
        rotary_base=float(cfg["rotary_base"]),
        rotary_adjacent_pairs=bool(cfg["rotary_adjacent_pairs"]),
        parallel_attn_mlp=bool(cfg["parallel_attn_mlp"]),
        gated_mlp=bool(cfg["gated_mlp"]),
        causal=cfg["attention_dir"] == "causal",
        attn_scale=(cfg["attn_scale"] if cfg["attn_scale"] > 0 else math.sqrt(cfg["d_head"]))
        if cfg["use_attn_scale"]
        else 1.0,
    )


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every key a HookedTransformer of ``cfg`` saves (buffers aside), with its shape."""
    d, H, dh, L = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["n_layers"]
    kv = cfg["n_key_value_heads"] or H
    grouped = "_" if cfg["n_key_value_heads"] else ""
    affine = NORMS[cfg["normalization_type"]][1]
    final_affine = ("w",) if cfg["final_rms"] and affine else affine
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (cfg["d_vocab"], d)}
    if cfg["positional_embedding_type"] == "standard":
        shapes["pos_embed.W_pos"] = (cfg["n_ctx"], d)
    for l in range(L):
        a = f"blocks.{l}.attn."
        shapes |= {f"blocks.{l}.ln1.{p}": (d,) for p in affine}
        shapes |= {a + "W_Q": (H, d, dh), a + "b_Q": (H, dh), a + "W_O": (H, dh, d), a + "b_O": (d,)}
        shapes |= {a + f"{grouped}W_{x}": (kv, d, dh) for x in "KV"} | {a + f"{grouped}b_{x}": (kv, dh) for x in "KV"}
        if not cfg["attn_only"]:
            m, dm = f"blocks.{l}.mlp.", cfg["d_mlp"]
            shapes |= {f"blocks.{l}.ln2.{p}": (d,) for p in affine}
            shapes |= {m + "W_in": (d, dm), m + "b_in": (dm,), m + "W_out": (dm, d), m + "b_out": (d,)}
            if cfg["gated_mlp"]:
                shapes[m + "W_gate"] = (d, dm)
    shapes |= {f"ln_final.{p}": (d,) for p in final_affine}
    shapes |= {"unembed.W_U": (d, cfg["d_vocab_out"]), "unembed.b_U": (cfg["d_vocab_out"],)}
    return shapes


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``torch.save`` file, on the CPU; a wrapping dict is looked into."""
    if not path.is_file():
        raise UserError(f"Weights file {path} does not exist.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many kinds on a file that is not a torch.save pickle
        raise UserError(
            f"{path} is not a state dict saved with torch.save (unpickling it failed: {type(error).__name__}). "
            f"Save the weights with torch.save(model.state_dict(), PATH)."
        ) from error
    if isinstance(loaded, dict) and not all(isinstance(v, Tensor) for v in loaded.values()):
        inner = [v for v in loaded.values() if isinstance(v, dict) and "embed.W_E" in v]
        loaded = inner[0] if len(inner) == 1 else loaded
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise UserError(
            f"{path} does not hold a state dict (a dict of tensors, possibly inside a dict with other "
            f"entries) but {type(loaded).__name__}. Save the weights with torch.save(model.state_dict(), PATH)."
        )
    return {k: v for k, v in loaded.items() if not k.endswith(BUFFER_SUFFIXES)}


def check_state_dict(state: dict[str, Tensor], cfg: dict, path: Path) -> None:
    """Keys and shapes as the config implies, and finite values."""
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in state]
    extra = sorted(set(state) - set(shapes))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {s})" for k, s in shapes.items() if k in state and state[k].shape != s
    ]
    facts = ", ".join(f"{k}={cfg[k]}" for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab"))
    if missing or extra or wrong:
        parts = [f"missing {', '.join(missing[:4])}"] if missing else []
        parts += [f"unexpected {', '.join(extra[:4])}"] if extra else []
        parts += [f"shapes {'; '.join(wrong[:3])}"] if wrong else []
        raise UserError(f"The weights in {path} do not match the config ({facts}): {'; '.join(parts)}.")
    whole = sorted(k for k, v in state.items() if not v.is_floating_point())
    if whole:
        raise UserError(
            f"The weights in {path} are not floating point ({', '.join(whole[:4])}: {state[whole[0]].dtype}); "
            f"save the model's float weights (a state dict of float32, float16 or bfloat16 tensors)."
        )
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise UserError(f"The weights in {path} contain NaN or inf (in {', '.join(bad[:6])}); use another checkpoint.")


def process(state: dict[str, Tensor], cfg: dict) -> dict[str, Tensor]:
    """The processed weights of the module docstring, in float64 arithmetic, returned as float32."""
    p = {k: v.double() for k, v in state.items()}
    H, L = cfg["n_heads"], cfg["n_layers"]
    if cfg["n_key_value_heads"]:
        repeat = H // cfg["n_key_value_heads"]
        for l in range(L):
            for name in ("W_K", "W_V", "b_K", "b_V"):
                p[f"blocks.{l}.attn.{name}"] = p.pop(f"blocks.{l}.attn._{name}").repeat_interleave(repeat, dim=0)
    norm = NORMS[cfg["normalization_type"]][0]

    def fold(prefix: str, readers: list[tuple[str, str | None]], centre: bool) -> None:
        """Fold ``prefix.w``/``prefix.b`` into reading weights ``W[..., d, out]`` and their biases."""
        w, b = p.pop(prefix + ".w", None), p.pop(prefix + ".b", None)
        for weight, bias in readers:
            W = p[weight]
            if b is not None and bias is not None:
                p[bias] = p[bias] + torch.einsum("d,...de->...e", b, W)
            W = W * w[:, None] if w is not None else W
            p[weight] = W - W.mean(-2, keepdim=True) if centre else W

    centre_reads = norm == "LN"
    for l in range(L):
        a, m = f"blocks.{l}.attn.", f"blocks.{l}.mlp."
        fold(f"blocks.{l}.ln1", [(a + f"W_{x}", a + f"b_{x}") for x in "QKV"], centre_reads)
        if cfg["attn_only"]:
            continue
        if cfg["gated_mlp"]:  # act(x W_gate) ⊙ x W_in: a bias of x cannot be folded into b_in
            if f"blocks.{l}.ln2.b" in p and p[f"blocks.{l}.ln2.b"].any():
                raise UserError("Cannot fold a LayerNorm bias into a gated MLP; Circuit Atlas cannot run it.")
            fold(f"blocks.{l}.ln2", [(m + "W_in", None), (m + "W_gate", None)], centre_reads)
        else:
            fold(f"blocks.{l}.ln2", [(m + "W_in", m + "b_in")], centre_reads)
    final_norm = runner_config(cfg).final_normalization
    fold("ln_final", [("unembed.W_U", "unembed.b_U")], final_norm == "LN")
    if norm == "LN" and final_norm == "LN":
        writers = ["embed.W_E", "pos_embed.W_pos"] + [f"blocks.{l}.attn.{x}" for l in range(L) for x in ("W_O", "b_O")]
        writers += [f"blocks.{l}.mlp.{x}" for l in range(L) for x in ("W_out", "b_out") if not cfg["attn_only"]]
        for name in writers:
            if name in p:
                p[name] = p[name] - p[name].mean(-1, keepdim=True)
    p["unembed.W_U"] = p["unembed.W_U"] - p["unembed.W_U"].mean(-1, keepdim=True)
    p["unembed.b_U"] = p["unembed.b_U"] - p["unembed.b_U"].mean()
    for l in range(L):
        a = f"blocks.{l}.attn."
        p[a + "b_O"] = p[a + "b_O"] + torch.einsum("he,hed->d", p[a + "b_V"], p[a + "W_O"])
        p[a + "b_V"] = torch.zeros_like(p[a + "b_V"])
    return {k: v.float() for k, v in p.items()}


class NativeCheckpoint(NamedTuple):
    config: TransformerConfig  # the runner's config of the processed model
    params: dict[str, Tensor]  # processed weights, TransformerLens names
    name: str
    family: str  # original_architecture, else "HookedTransformer"
    source: str  # the config file
    tokenizer_name: str | None


def load_checkpoint(config_path: Path, weights_path: Path) -> NativeCheckpoint:
    """Read, check and process a native checkpoint (the module docstring's steps)."""
    config_path, weights_path = Path(config_path).expanduser(), Path(weights_path).expanduser()
    cfg = read_config(config_path)
    state = read_state_dict(weights_path)
    check_state_dict(state, cfg, weights_path)
    return NativeCheckpoint(
        runner_config(cfg),
        process(state, cfg),
        model_name(config_path),
        cfg["original_architecture"] or "HookedTransformer",
        str(config_path.resolve()),
        cfg["tokenizer_name"],
    )


def tokenizer(name: str | None):
    """The config's ``tokenizer_name`` loaded with ``AutoTokenizer`` if this machine has it, else None."""
    if not name:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError):
        return None
