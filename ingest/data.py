"""Data slices: named token sets with a metric, from built-in generators or files.

A slice is ``tokens: int64 [n_seq, seq_len]`` plus a name, a description and a metric (only
``next_token_loss`` so far: the mean next-token cross-entropy of a sequence). Its id is
``name:hash`` of the tokens, so the same data under the same name is the same
``(:DataSlice)`` in every checkpoint and run.

Sources (``--data``, optionally ``NAME=SOURCE``):

- ``random``: uniform random tokens;
- ``repeated``: a uniform random half sequence followed by an exact copy (the induction probe);
- ``PATH.npy`` / ``PATH.pt``: token ids, 2-D ``[n_seq, seq_len]`` or 1-D (cut into sequences);
- ``PATH.txt``: text, tokenized with the model's tokenizer and cut into sequences.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .model_adapter import ModelSpec

METRICS = ("next_token_loss",)
SYNTHETIC = {
    "random": "uniform random tokens",
    "repeated": "a uniform random half sequence, then an exact repeat of it",
}


@dataclass(frozen=True)
class DataSlice:
    name: str
    description: str
    tokens: Tensor  # int64 [n_seq, seq_len]
    metric: str = "next_token_loss"

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.tokens.numpy().astype(np.int64).tobytes()).hexdigest()

    @property
    def id(self) -> str:
        return f"{self.name}:{self.content_hash[:12]}"

    def split(self, holdout_fraction: float) -> tuple[Tensor, Tensor]:
        """(fit, held-out) sequences: the last ``holdout_fraction`` (at least one) are held out."""
        n = self.tokens.shape[0]
        n_held = max(1, round(n * holdout_fraction))
        if n - n_held < 1:
            raise UserError(
                f"Slice {self.name!r} has {n} sequence(s); fitting and the held-out "
                f"fidelity check need at least 2. Give more data."
            )
        return self.tokens[: n - n_held], self.tokens[n - n_held :]


def synthetic_tokens(kind: str, d_vocab: int, n_seq: int, seq_len: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(0, d_vocab, (n_seq, seq_len), generator=generator)
    if kind == "repeated":
        half = seq_len // 2
        first = torch.randint(0, d_vocab, (n_seq, seq_len - half), generator=generator)
        return torch.cat([first, first[:, -half:] if half else first[:, :0]], dim=1)
    raise UserError(f"Unknown built-in slice {kind!r}; built-ins are {', '.join(SYNTHETIC)}.")


def _read_token_file(path: Path) -> Tensor:
    """The tensor in a ``.npy`` or ``.pt`` file; :class:`UserError` for anything else (objects,
    pickles, damaged or foreign files)."""
    what = "a NumPy .npy array of integer token ids" if path.suffix == ".npy" else "a torch tensor of token ids"
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype == object:
                raise ValueError("it holds Python objects")
            return torch.from_numpy(np.ascontiguousarray(array))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"{path} is not {what}: torch.load cannot read it as tensors. Save token ids with torch.save."
        ) from error
    except (ValueError, OSError, EOFError, RuntimeError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        if "pickle" in reason:  # numpy's words for any file that does not start like a .npy file
            reason = "not a .npy file, or one of pickled objects"
        raise UserError(f"{path} is not {what} ({reason}). Save token ids with numpy.save or torch.save.") from error
    if not isinstance(loaded, Tensor):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a tensor of token ids.")
    return loaded


def _cut(ids: Tensor, seq_len: int, source: str) -> Tensor:
    if ids.ndim == 1:
        n_seq = ids.numel() // seq_len
        return ids[: n_seq * seq_len].reshape(n_seq, seq_len)
    if ids.ndim == 2:
        return ids
    raise UserError(f"{source} has token ids of shape {tuple(ids.shape)}; give [n_seq, seq_len] or a flat list.")


def load_slice(argument: str, spec: ModelSpec, tokenizer, seq_len: int, n_seq: int, seed: int) -> DataSlice:
    """The slice named by a ``--data`` argument, validated against the model."""
    name, _, source = argument.rpartition("=")
    name = name or Path(source).stem
    if source in SYNTHETIC:
        tokens = synthetic_tokens(source, spec.d_vocab, n_seq, seq_len, seed)
        description = f"{SYNTHETIC[source]}: {n_seq} sequences of {seq_len} tokens (seed {seed})"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"--data {argument!r}: no file {path}, and not a built-in slice ({', '.join(SYNTHETIC)}).")
        if path.suffix in (".npy", ".pt"):
            ids = _read_token_file(path)
            if ids.is_floating_point() or ids.dtype == torch.bool:
                raise UserError(f"{path} holds {ids.dtype} values; token ids must be integers.")
        elif path.suffix == ".txt":
            if tokenizer is None:
                raise UserError(f"{path} is text but the model has no tokenizer; give token ids as .npy or .pt.")
            ids = torch.tensor(tokenizer(path.read_text())["input_ids"], dtype=torch.int64)
        else:
            raise UserError(f"{path}: unknown data format {path.suffix!r}; use .npy, .pt or .txt.")
        tokens = _cut(ids.to(torch.int64), seq_len, str(path))
        description = f"{path.name}: {tokens.shape[0]} sequences of {tokens.shape[1]} tokens"
    return validated(DataSlice(name, description, tokens.to(torch.int64).contiguous()), spec)


def validated(data: DataSlice, spec: ModelSpec) -> DataSlice:
    """``data`` if it fits the model; else :class:`UserError` naming the problem and the fix."""
    if data.tokens.numel() == 0:
        raise UserError(
            f"Slice {data.name!r} is empty: it has no complete sequence. Give more tokens or a shorter --seq-len."
        )
    if data.tokens.shape[1] > spec.n_ctx:
        raise UserError(
            f"Slice {data.name!r} has sequences of {data.tokens.shape[1]} tokens but "
            f"{spec.name} has a context of {spec.n_ctx}. Use --seq-len {spec.n_ctx} or less."
        )
    if data.tokens.shape[1] < 2:
        raise UserError(f"Slice {data.name!r} has sequences of 1 token; next-token loss needs at least 2.")
    low, high = int(data.tokens.min()), int(data.tokens.max())
    if low < 0 or high >= spec.d_vocab:
        raise UserError(
            f"Slice {data.name!r} has token ids in [{low}, {high}] but {spec.name} has a "
            f"vocabulary of {spec.d_vocab} (ids 0..{spec.d_vocab - 1})."
        )
    if data.metric not in METRICS:
        raise UserError(f"Unknown metric {data.metric!r}; available: {', '.join(METRICS)}.")
    return data
