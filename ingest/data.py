"""Data slices: named prompts with a metric, from built-in generators, token and text files, or
task files.

A slice is its prompts ``tokens`` [n, p] (right-padded: ``mask`` [n, p] marks real tokens), a
metric (:mod:`.metrics`) and, for a positional metric, each prompt's scored positions, answers and
counterfactuals. Its id is ``name:hash`` of all of that, so the same data under the same name is
the same ``(:DataSlice)`` in every checkpoint and run.

Sources (``--data``, optionally ``NAME=SOURCE``):

- ``random``: uniform random tokens; ``repeated``: a random half sequence, then an exact copy;
- ``PATH.npy`` / ``PATH.pt``: token ids, 2-D ``[n, p]`` or 1-D (cut into sequences);
- ``PATH.txt``: text, tokenized with the model's tokenizer and cut into sequences;
- ``PATH.jsonl`` / ``PATH.parquet``: a task slice, one row per prompt (README, "Task slices"):
  ``tokens`` (list of ids) or ``text``; ``metric`` (the same in every row; default
  ``next_token_loss``); for a positional metric ``position`` (negative: from the end of the
  prompt) with ``answer`` (``answer_loss``, ``logit_diff``) or ``label`` (``label_loss``) and
  ``counterfactual`` (``logit_diff``), each a value or a list (several scored positions).
  Answers given as text must be one token.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .metrics import METRICS, POSITIONAL, Targets
from .model_adapter import ModelSpec

SYNTHETIC = {
    "random": "uniform random tokens",
    "repeated": "a uniform random half sequence, then an exact repeat of it",
}
PAD = 0  # the id right-padding uses (never scored, never attended by a real token of a causal model)


@dataclass(frozen=True, eq=False)
class DataSlice:
    name: str
    description: str
    tokens: Tensor  # int64 [n, p], right-padded with PAD
    mask: Tensor  # bool [n, p]: real tokens
    metric: str = "next_token_loss"
    positions: Tensor | None = None  # int64 [n, m]: scored positions, -1 where a prompt has fewer
    answers: Tensor | None = None  # int64 [n, m]
    counterfactuals: Tensor | None = None  # int64 [n, m] (logit_diff)
    scored: str = "every next token"  # the rule of the scored positions, for the catalog
    discovered: bool = False  # a situation the ingest found (ingest/situations.py), not a slice it was given
    corrupted: Tensor | None = None  # int64 [n, p]: each prompt's counterfactual prompt, same real positions
    origin: tuple[tuple[str, int], ...] | None = None  # a situation's prompts: (named slice, index there)

    @classmethod
    def of_tokens(cls, name: str, description: str, tokens: Tensor) -> DataSlice:
        """Whole sequences scored by next-token loss."""
        tokens = tokens.to(torch.int64).contiguous()
        return cls(name, description, tokens, torch.ones_like(tokens, dtype=torch.bool))

    @property
    def n_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.metric.encode())
        for tensor in (self.tokens, self.mask, self.positions, self.answers, self.counterfactuals, self.corrupted):
            digest.update(b"-" if tensor is None else tensor.numpy().astype(np.int64).tobytes())
        return digest.hexdigest()

    @property
    def id(self) -> str:
        return f"{self.name}:{self.content_hash[:12]}"

    def rows(self, index: Tensor | slice) -> DataSlice:
        """The prompts ``index`` selects, as a slice of the same name and metric."""

        def pick(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor[index]

        return replace(
            self,
            tokens=self.tokens[index],
            mask=self.mask[index],
            positions=pick(self.positions),
            answers=pick(self.answers),
            counterfactuals=pick(self.counterfactuals),
            corrupted=pick(self.corrupted),
            origin=None if self.origin is None else tuple(self.origin[i] for i in _indices(index, len(self.origin))),
        )

    def targets(self) -> Targets:
        return Targets(self.metric, self.mask, self.positions, self.answers, self.counterfactuals)

    def batches(self, batch_tokens: int):
        """Consecutive prompt blocks of about ``batch_tokens`` (padded) tokens each."""
        rows = max(1, batch_tokens // self.tokens.shape[1])
        for start in range(0, self.n_sequences, rows):
            yield self.rows(slice(start, start + rows))

    def spread(self, count: int) -> DataSlice:
        """At most ``count`` prompts spread evenly over the slice."""
        return self.rows(torch.linspace(0, self.n_sequences - 1, min(count, self.n_sequences)).round().long())

    def split(self, holdout_fraction: float, seed: int) -> tuple[DataSlice, DataSlice]:
        """(fit, held-out) prompts: ``holdout_fraction`` of them (at least one) drawn at random with
        ``seed``, each part in the slice's order (a file sorted by class holds out every class)."""
        n = self.n_sequences
        n_held = max(1, round(n * holdout_fraction))
        if n - n_held < 1:
            raise UserError(
                f"Slice {self.name!r} has {n} prompt(s); fitting and the held-out checks need at "
                f"least 2. Give more data."
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.rows(order[n_held:].sort().values), self.rows(order[:n_held].sort().values)


def synthetic_tokens(kind: str, d_vocab: int, n_seq: int, seq_len: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(0, d_vocab, (n_seq, seq_len), generator=generator)
    if kind == "repeated":
        half = seq_len // 2
        first = torch.randint(0, d_vocab, (n_seq, seq_len - half), generator=generator)
        return torch.cat([first, first[:, -half:] if half else first[:, :0]], dim=1)
    raise UserError(f"Unknown built-in slice {kind!r}; built-ins are {', '.join(SYNTHETIC)}.")


def read_token_file(path: Path) -> Tensor:
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


def _indices(index: Tensor | slice, n: int) -> list[int]:
    """The positions ``index`` selects among ``n``, as a list."""
    return list(range(n)[index]) if isinstance(index, slice) else torch.arange(n)[index].tolist()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from error


#: The largest token id a tensor of ids holds (int64); the model's vocabulary is checked later.
MAX_ID = 2**63 - 1


def _is_id(value) -> bool:
    """An integer token id that fits int64 (JSON's true and false are not ids)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def _task_rows(path: Path) -> list[dict]:
    """The rows of a JSONL or Parquet task file, as dicts."""
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowInvalid, OSError) as error:
            raise UserError(f"{path} is not readable Parquet ({error}).") from error
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{path}:{number} is not JSON ({error.msg}); a task file has one JSON object a line."
                ) from error
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number} is a {type(row).__name__}, not a JSON object (one prompt a line).")
            rows.append(row)
    return rows


#: A task row's counterfactual prompt, as ids or as text (``--ablation counterfactual`` patches from it).
COUNTERFACTUAL_FIELDS = ("counterfactual_tokens", "counterfactual_text")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _TaskReader:
    """Turns task-file rows into a :class:`DataSlice`, with a clear error for each bad row."""

    def __init__(self, path: Path, tokenizer):
        self.path, self.tokenizer = path, tokenizer

    def fail(self, number: int, message: str) -> NoReturn:
        raise UserError(f"{self.path} prompt {number}: {message}")

    def ids(self, number: int, row: dict) -> list[int]:
        if "tokens" in row:
            tokens = row["tokens"]
            if not isinstance(tokens, (list, tuple)) or not all(_is_id(t) for t in tokens):
                self.fail(number, "'tokens' must be a list of token ids (integers >= 0).")
            return list(tokens)
        if "text" in row:
            if self.tokenizer is None:
                self.fail(number, "has 'text' but the model has no tokenizer; give 'tokens' (ids) instead.")
            return list(self.tokenizer(str(row["text"]))["input_ids"])
        self.fail(number, "has neither 'tokens' nor 'text'.")

    def counterfactual_ids(self, number: int, row: dict, prompt: list[int]) -> list[int] | None:
        """The prompt's counterfactual prompt (``counterfactual_tokens`` or ``counterfactual_text``,
        as long as the prompt), or None without one."""
        given = {k[len("counterfactual_") :]: v for k, v in row.items() if k in COUNTERFACTUAL_FIELDS}
        if not given:
            return None
        ids = self.ids(number, given)
        if len(ids) != len(prompt):
            self.fail(
                number,
                f"its counterfactual prompt has {len(ids)} tokens and the prompt {len(prompt)}; a counterfactual "
                f"replaces each position's token, so give one as long as the prompt.",
            )
        return ids

    def token(self, number: int, value, field: str) -> int:
        if _is_id(value):
            return value
        if isinstance(value, str) and self.tokenizer is not None:
            ids = self.tokenizer(value)["input_ids"]
            if len(ids) == 1:
                return ids[0]
            self.fail(number, f"{field} {value!r} is {len(ids)} tokens; an answer must be one token.")
        self.fail(
            number, f"{field} must be a token id (an integer >= 0) or, with a tokenizer, one-token text; not {value!r}."
        )

    def read(self, name: str, rows: list[dict]) -> DataSlice:
        if not rows:
            raise UserError(f"{self.path} has no prompts.")
        for number, row in enumerate(rows, 1):
            if not isinstance(row.get("metric", ""), str):
                self.fail(number, f"'metric' must be one metric's name ({', '.join(METRICS)}), not {row['metric']!r}.")
        metrics = {row.get("metric", "next_token_loss") for row in rows}
        if len(metrics) > 1:
            raise UserError(f"{self.path} mixes metrics {sorted(metrics)}; one slice has one metric (split the file).")
        [metric] = metrics
        if metric not in METRICS:
            raise UserError(f"{self.path}: unknown metric {metric!r}; available: {', '.join(METRICS)}.")
        prompts = [self.ids(i, row) for i, row in enumerate(rows, 1)]
        counterfactual = [self.counterfactual_ids(i, row, p) for i, (row, p) in enumerate(zip(rows, prompts), 1)]
        if len({c is None for c in counterfactual}) > 1:
            missing = next(i for i, c in enumerate(counterfactual, 1) if c is None)
            self.fail(missing, "has no counterfactual prompt while others do: give every prompt one, or none.")
        width = max(len(p) for p in prompts)
        tokens = torch.full((len(prompts), width), PAD, dtype=torch.int64)
        corrupted = tokens.clone() if counterfactual[0] is not None else None
        mask = torch.zeros(len(prompts), width, dtype=torch.bool)
        for i, prompt in enumerate(prompts):
            tokens[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.int64)
            mask[i, : len(prompt)] = True
            if corrupted is not None:
                corrupted[i, : len(prompt)] = torch.tensor(counterfactual[i], dtype=torch.int64)
        description = f"{self.path.name}: {len(prompts)} prompts of up to {width} tokens, {metric}"
        if metric not in POSITIONAL:
            return DataSlice(name, description, tokens, mask, metric, corrupted=corrupted)
        answer_field = "label" if metric == "label_loss" else "answer"
        scored, relative = [], set()
        for i, (row, prompt) in enumerate(zip(rows, prompts), 1):
            if "position" not in row or answer_field not in row:
                self.fail(i, f"metric {metric} needs 'position' and '{answer_field}'.")
            positions, answers = _as_list(row["position"]), _as_list(row[answer_field])
            if not positions:
                self.fail(i, "'position' lists no position; give the position (or positions) to score.")
            counterfactuals = _as_list(row["counterfactual"]) if "counterfactual" in row else [None] * len(positions)
            if metric == "logit_diff" and "counterfactual" not in row:
                self.fail(
                    i, "metric logit_diff needs 'counterfactual' (the token the correct answer is compared with)."
                )
            if not len(positions) == len(answers) == len(counterfactuals):
                self.fail(i, f"'position' and '{answer_field}' (and 'counterfactual') need the same number of entries.")
            entries = []
            for position, answer, counterfactual in zip(positions, answers, counterfactuals):
                if (
                    isinstance(position, bool)
                    or not isinstance(position, int)
                    or not -len(prompt) <= position < len(prompt)
                ):
                    self.fail(i, f"position {position!r} is outside the prompt of {len(prompt)} tokens.")
                relative.add(position)
                entries.append(
                    (
                        position % len(prompt),
                        self.token(i, answer, answer_field),
                        -1 if "counterfactual" not in row else self.token(i, counterfactual, "counterfactual"),
                    )
                )
            scored.append(entries)
        m = max(len(e) for e in scored)
        fields = [torch.full((len(prompts), m), -1, dtype=torch.int64) for _ in range(3)]
        for i, entries in enumerate(scored):
            for j, entry in enumerate(entries):
                for field, value in zip(fields, entry):
                    field[i, j] = value
        rule = f"position {relative.pop()}" if len(relative) == 1 else "positions listed per prompt"
        return DataSlice(
            name, description, tokens, mask, metric, fields[0], fields[1], fields[2], scored=rule, corrupted=corrupted
        )


def load_slice(argument: str, spec: ModelSpec, tokenizer, seq_len: int, n_seq: int, seed: int) -> DataSlice:
    """The slice named by a ``--data`` argument, validated against the model."""
    name, _, source = argument.rpartition("=")
    name = name or Path(source).stem
    if source in SYNTHETIC:
        tokens = synthetic_tokens(source, spec.d_vocab, n_seq, seq_len, seed)
        return validated(
            DataSlice.of_tokens(
                name, f"{SYNTHETIC[source]}: {n_seq} sequences of {seq_len} tokens (seed {seed})", tokens
            ),
            spec,
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"--data {argument!r}: no file {path}, and not a built-in slice ({', '.join(SYNTHETIC)}).")
    if path.suffix in (".jsonl", ".parquet"):
        return validated(_TaskReader(path, tokenizer).read(name, _task_rows(path)), spec)
    if path.suffix in (".npy", ".pt"):
        ids = read_token_file(path)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise UserError(f"{path} holds {ids.dtype} values; token ids must be integers.")
    elif path.suffix == ".txt":
        if tokenizer is None:
            raise UserError(f"{path} is text but the model has no tokenizer; give token ids as .npy or .pt.")
        ids = torch.tensor(tokenizer(_read_text(path))["input_ids"], dtype=torch.int64)
    else:
        raise UserError(f"{path}: unknown data format {path.suffix!r}; use .npy, .pt, .txt, .jsonl or .parquet.")
    tokens = _cut(ids.to(torch.int64), seq_len, str(path))
    description = f"{path.name}: {tokens.shape[0]} sequences of {tokens.shape[1]} tokens"
    return validated(DataSlice.of_tokens(name, description, tokens), spec)


def validated(data: DataSlice, spec: ModelSpec) -> DataSlice:
    """``data`` if it fits the model; else :class:`UserError` naming the problem and the fix."""
    if data.tokens.numel() == 0:
        raise UserError(
            f"Slice {data.name!r} is empty: it has no complete sequence. Give more tokens or a shorter --seq-len."
        )
    if data.tokens.shape[1] > spec.n_ctx:
        raise UserError(
            f"Slice {data.name!r} has sequences of {data.tokens.shape[1]} tokens but {spec.name} has a "
            f"context of {spec.n_ctx}. Use --seq-len {spec.n_ctx} or less (or shorter prompts)."
        )
    if data.metric == "next_token_loss" and int(data.mask.sum(1).min()) < 2:
        raise UserError(f"Slice {data.name!r} has a prompt of fewer than 2 tokens; next-token loss needs at least 2.")
    real = data.tokens[data.mask]
    if data.corrupted is not None:
        real = torch.cat([real, data.corrupted[data.mask]])
    low, high = int(real.min()), int(real.max())
    if low < 0 or high >= spec.d_vocab:
        raise UserError(
            f"Slice {data.name!r} has token ids in [{low}, {high}] but {spec.name} has a vocabulary of "
            f"{spec.d_vocab} (ids 0..{spec.d_vocab - 1})."
        )
    outputs = getattr(spec, "d_vocab_out", None) or spec.d_vocab
    if data.metric == "next_token_loss" and high >= outputs:
        raise UserError(
            f"Slice {data.name!r} is scored by next-token loss, but {spec.name} predicts {outputs} classes "
            f"(0..{outputs - 1}) and the slice has tokens up to {high}: give a task slice with answers or labels."
        )
    for field in (data.answers, data.counterfactuals):
        if field is not None and (field >= outputs).any():
            raise UserError(
                f"Slice {data.name!r} has answers up to {int(field.max())} but {spec.name} predicts "
                f"{outputs} classes or tokens (0..{outputs - 1})."
            )
    return data
