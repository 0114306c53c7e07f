"""A reference model trained on real text that every machine with Python has: the standard library.

The corpus is the ``.py`` files of the running Python's standard library (code, comments,
docstrings, strings), without its test suites and vendored tools, read as bytes in sorted path
order: every 20th file is held out as evaluation data (``heldout.npy``, a token file the ingest
reads), the rest is the training stream. The model is a byte-level GPT-NeoX (256 tokens, one per
byte; a Hugging Face byte-level tokenizer with no merges is saved with every checkpoint, so
examples and situations show text), a few layers, trained on random windows of the stream.

Training (``reference/training.py``) is deterministic for a seed and a Python version (the recipe
names the version: another standard library is another corpus), takes about 10 minutes on one
thread of these machines, and is cached like the other reference models.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .training import checkpoint_dirs, gpt_neox, next_token_loss, train_cached

#: Folders of the standard library left out of the corpus: test suites and bundled applications.
EXCLUDED = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__"})
HELDOUT_FILE = "heldout.npy"


@dataclass(frozen=True)
class StdlibTextRecipe:
    seed: int = 0
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    holdout_every: int = 20  # every n-th file (sorted by path) is evaluation data
    d_vocab: int = 256
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_mlp: int = 512
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 800
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    checkpoint_every: int = 400

    @property
    def name(self) -> str:
        return f"stdlib-text-s{self.seed}"


def corpus_files(root: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files in path order, without :data:`EXCLUDED` folders."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not EXCLUDED & set(p.relative_to(root).parts[:-1]))


def corpus(recipe: StdlibTextRecipe, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(training bytes, held-out bytes) as int64 token streams, files separated by a blank line."""
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i, path in enumerate(corpus_files(root)):
        parts[i % recipe.holdout_every == 0].append(path.read_bytes())
    train, heldout = (np.frombuffer(b"\n\n".join(p), dtype=np.uint8).astype(np.int64) for p in parts)
    return torch.from_numpy(train), torch.from_numpy(heldout)


def byte_tokenizer():
    """A Hugging Face tokenizer whose token i is byte i (byte-level pre-tokenisation, no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = _byte_alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=alphabet[ord("\n")])


def _byte_alphabet() -> dict[int, str]:
    """Byte -> the printable character byte-level BPE writes it as: printable Latin-1 bytes are
    themselves, every other byte the next unused code point from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


def train_stdlib_text(
    recipe: StdlibTextRecipe,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    root: Path | None = None,
) -> list[Path]:
    """Train (or reuse) the checkpoints of ``recipe`` under ``out/<name>`` on the standard library at
    ``root`` (default: this Python's); returns them by step. ``heldout.npy`` lies beside them."""
    train, heldout = corpus(recipe, root)

    def windows(recipe: StdlibTextRecipe, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(train) - recipe.seq_len, (recipe.batch_size, 1), generator=generator)
        return train[starts + torch.arange(recipe.seq_len)]

    def finish(folder: Path) -> None:
        tokenizer = byte_tokenizer()
        for checkpoint in checkpoint_dirs(folder):
            tokenizer.save_pretrained(checkpoint)
        np.save(folder / HELDOUT_FILE, heldout.numpy())

    return train_cached(recipe, out, gpt_neox, windows, next_token_loss, finish, progress, echo)
