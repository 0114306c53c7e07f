"""What an intervention costs against a bare forward pass over the same tokens, and what batching saves.

    python benchmarks/steering.py [--device cpu] [--n-seq 256] [--k 8] [--repeats 3]

A reference model's final checkpoint (``--model``: the attention-only induction model on repeated
tokens, or the byte-level standard-library model on its held-out text), ingested beside random
tokens, is steered on its first slice (``ingest/steering.py``). Timed, each the best of ``--repeats``:

- a bare forward over the slice's prompts (no hooks), in the ingest's batches;
- one intervention on the first head (``patch`` of its write from random tokens; ``project``,
  which needs no clean capture pass);
- ``k`` interventions batched in one call, and the same ``k`` as ``k`` separate calls.

A call runs, per intervention, what it needs from clean passes (the coordinates' statistics, a
patch's source coordinates) and then one batched pass of the clean rows and each intervention's
rows. Prints the seconds of each and the ratios: a call over the bare forward, the marginal cost of
one more batched intervention over the bare forward, and ``k`` batched over ``k`` separate calls.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.channels import model_channels
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest, load_slices
from circuit_atlas.ingest.steering import parse, steer
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.attention_only import NATIVE_CONFIG, AttentionOnlyRecipe, train_attention_only
from circuit_atlas.reference.stdlib_text import HELDOUT_FILE, StdlibTextRecipe, train_stdlib_text


def best(repeats: int, run) -> float:
    """The fewest wall seconds ``run()`` took over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def reference(name: str, n_seq: int, scratch: Path) -> tuple[str, str | None, list[str]]:
    """A reference model's source, weights (None: a Hugging Face folder) and its two slices, the
    first steered on, the second the patches' source (for the text model, the first ``n_seq``
    sequences of its held-out text, written under ``scratch``)."""
    if name == "attention-only":
        final = train_attention_only(AttentionOnlyRecipe(), default_reference_dir(), progress=False, echo=print)[-1]
        return str(final.parent / NATIVE_CONFIG), str(final), ["repeated", "random"]
    recipe = StdlibTextRecipe()
    final = train_stdlib_text(recipe, default_reference_dir(), progress=False, echo=print)[-1]
    text = np.load(final.parent / HELDOUT_FILE)[: n_seq * recipe.seq_len]
    np.save(scratch / "text.npy", text)
    return str(final), None, [f"text={scratch / 'text.npy'}", "random"]


@click.command()
@click.option("--model", "which", type=click.Choice(["attention-only", "stdlib-text"]), default="attention-only",
              show_default=True, help="The reference model: the attention-only induction model (d_model 64) or "
              "the byte-level standard-library model (d_model 128, 3 layers, 128-token sequences).")  # fmt: skip
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--n-seq", default=256, show_default=True, help="Sequences per built-in slice.")
@click.option("--k", default=8, show_default=True, help="Interventions batched in one call.")
@click.option("--repeats", default=3, show_default=True, help="Runs per timing (the best is kept).")
def main(which: str, device: str, n_seq: int, k: int, repeats: int) -> None:
    torch.manual_seed(0)
    config = IngestConfig(n_seq=n_seq, examples=0)
    with tempfile.TemporaryDirectory() as scratch:
        source, weights, data = reference(which, n_seq, Path(scratch))
        (artifact,) = ingest(
            source, [weights or source], data, Path(scratch), config, device, progress=False, echo=lambda _: None
        )
        bases = read_artifact(artifact).bases()
        model = load_model(source, weights, device)
        slices = {s.name: s for s in load_slices(model, data, config)}
    steered, channels = next(iter(slices.values())), model_channels(model.spec)
    heads = [c.name for c in channels if c.kind == "attn_head"]

    def interventions(specs: list[str]):
        return [parse(spec, bases, channels, list(slices)) for spec in specs]

    def bare() -> None:
        with torch.no_grad():
            for batch in steered.batches(config.batch_tokens):
                model.run(batch.tokens, [], batch.mask)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def call(specs: list[str]):
        return lambda: steer(model, bases, interventions(specs), [steered], slices, config.batch_tokens)

    patch, project = f"patch {heads[0]}/out from random", f"project {heads[0]}/out"
    many = [f"patch {head}/out from random" for head in heads][:k]
    bare()  # warm-up
    times = {
        "bare forward": best(repeats, bare),
        f"1 intervention ({patch})": best(repeats, call([patch])),
        f"1 intervention ({project})": best(repeats, call([project])),
        f"{len(many)} patches batched": best(repeats, call(many)),
        f"{len(many)} patches, separate calls": best(repeats, lambda: [call([s])() for s in many]),
    }
    print(f"{steered.n_tokens:,} tokens of {steered.name} on {device} ({model.spec.name}), best of {repeats}:")
    for name, seconds in times.items():
        print(f"  {name:<45} {seconds:8.3f} s  {seconds / times['bare forward']:6.2f} x bare forward")
    batched, separate = times[f"{len(many)} patches batched"], times[f"{len(many)} patches, separate calls"]
    marginal = (batched - times[f"1 intervention ({patch})"]) / (len(many) - 1)
    print(f"  one more batched patch: {marginal / times['bare forward']:.2f} x bare forward")
    print(f"  {len(many)} batched / {len(many)} separate: {batched / separate:.2f}")


if __name__ == "__main__":
    main()
