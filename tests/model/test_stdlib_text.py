"""The real-text reference model: its corpus, byte tokenizer and training loop, on a small stand-in
for the standard library (the full recipe trains for minutes: README, "A model trained on real text")."""

from dataclasses import replace

import numpy as np
import torch

from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.reference.stdlib_text import (
    HELDOUT_FILE,
    StdlibTextRecipe,
    byte_tokenizer,
    corpus,
    corpus_files,
    train_stdlib_text,
)
from circuit_atlas.reference.training import folder_name

TINY = StdlibTextRecipe(
    holdout_every=3, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seq_len=16, batch_size=4, steps=4, warmup=1,
    checkpoint_every=2,
)  # fmt: skip


def library(root):
    """Five modules, a test suite and a cache folder that the corpus leaves out."""
    for i, name in enumerate(["a.py", "b.py", "pkg/c.py", "pkg/d.py", "e.py", "test/t.py", "__pycache__/x.py"]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {i}: é."""\n\ndef f{i}(x):\n    return x + {i}\n' * 3)
    return root


def test_the_corpus_is_the_library_without_tests_split_by_file(tmp_path):
    root = library(tmp_path / "lib")
    files = corpus_files(root)
    assert [p.relative_to(root).as_posix() for p in files] == ["a.py", "b.py", "e.py", "pkg/c.py", "pkg/d.py"]
    train, heldout = corpus(TINY, root)
    assert bytes(heldout.to(torch.uint8).tolist()) == files[0].read_bytes() + b"\n\n" + files[3].read_bytes()
    assert len(train) == sum(len(files[i].read_bytes()) for i in (1, 2, 4)) + 2 * 2
    assert torch.equal(corpus(TINY, root)[0], train)


def test_token_i_is_byte_i():
    tokenizer = byte_tokenizer()
    text = "def f(x):\n    return 'é'  # ~\t"
    ids = tokenizer.encode(text)
    assert ids == list(text.encode()) and tokenizer.decode(ids) == text
    assert len(tokenizer) == 256


def test_training_saves_loadable_checkpoints_with_the_tokenizer_and_the_held_out_text(tmp_path):
    root = library(tmp_path / "lib")
    messages = []
    folders = train_stdlib_text(TINY, tmp_path / "out", progress=False, echo=messages.append, root=root)
    assert [f.name for f in folders] == ["step-00000", "step-00002", "step-00004"]
    model = load_model(str(folders[-1]))
    assert model.spec.d_vocab == 256 and model.tokenizer.decode(list(b"def")) == "def"
    assert np.array_equal(np.load(folders[0].parent / HELDOUT_FILE), corpus(TINY, root)[1].numpy())
    again = train_stdlib_text(TINY, tmp_path / "out", progress=False, echo=messages.append, root=root)
    assert again == folders and "Reusing" in messages[-1]
    retrained = train_stdlib_text(
        replace(TINY, seed=1), tmp_path / "out", progress=False, echo=messages.append, root=root
    )
    assert retrained[0].parent.name == folder_name(replace(TINY, seed=1))  # a folder of its own, not TINY's
