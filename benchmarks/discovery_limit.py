"""How well situation discovery recovers known slices, and what its choices are worth.

    python benchmarks/discovery_limit.py [--out DIR] [--case NAME ...]

Discovery (``ingest/situations.py``) clusters prompts by each channel's exact effect on them, every
channel ablated alone to one baseline measured on all the prompts (``exact_usage``). For sets of
known slices, this prints the adjusted Rand index (ARI) against the slices of:

- ``first-order``: k-means (k = the number of slices) on the signed first-order effects that
  discovery clustered before, rows of unit norm;
- ``per-slice``: k-means (k known) on the usage, with each channel ablated to its own slice's
  baseline instead of one for all (the label leaks into the usage);
- ``discover``: discovery itself (its k chosen by silhouette against reference data without clusters),
  then, on the same usage with k chosen by each one's own criterion, a Gaussian mixture (full
  covariance, k by BIC), Ward agglomerative clustering (k by silhouette) and HDBSCAN (clusters of
  at least 5 % of the prompts);
- ``supervised``: the 5-fold accuracy of a logistic regression trained on the labels, a rough
  ceiling for any clustering of that usage (an ARI of 0.9 between two equal slices needs about
  97.5 % agreement).

Then each channel's median exact effect per slice, in nats.

The cases:

- ``induction``: the reference model's repeated and random sequences (96 each);
- ``keyvalue``: the key-value model's task and trivial slices (256 each);
- ``two-tasks``: the key-value model fine-tuned for 300 steps on a mixture of its lookup prompts
  and an increment task (13 distinct tokens from 32 up; the answer is the last one's successor mod
  32), 256 fresh prompts of each;
- ``scratch``: a 2-layer, 4-heads-per-layer model trained from scratch for 1,500 steps on a
  mixture of copying the first token (tokens 0-31) and the same increment task (12 tokens from 32
  up, with repeats), 256 prompts of each.
- ``first-unique``: the first-unique-character model (``reference/first_unique.py``), 256 prompts
  for each of its layer-1 heads whose answer at the last position is one of the letters that head
  alone serves (e g i j; c h; a b): classes that use different heads.

The ``two-tasks`` and ``scratch`` models are trained here under ``--out`` (about one minute),
deterministically.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import numpy as np
import torch
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import cross_val_score

from circuit_atlas.ingest.attribution import slice_scores
from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import ABLATIONS
from circuit_atlas.ingest.data import DataSlice, synthetic_tokens
from circuit_atlas.ingest.fidelity import ablation_losses
from circuit_atlas.ingest.interventions import Interventions
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.situations import discover, exact_usage
from circuit_atlas.ingest.statistics import accumulate_moments
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.attention_only import NATIVE_CONFIG
from circuit_atlas.reference.first_unique import (
    HEAD_LETTERS,
    FirstUniqueRecipe,
    class_prompts,
    first_unique_answers,
    train_first_unique,
)
from circuit_atlas.reference.induction import InductionRecipe, train_induction
from circuit_atlas.reference.keyvalue import KeyValueRecipe, Prompts, answer_loss, prompts, train_keyvalue
from circuit_atlas.reference.training import gpt_neox, train_cached

HALF = 32  # the increment task's tokens are HALF .. 2 * HALF - 1


def increment(n: int, length: int, distinct: bool, generator: torch.Generator) -> Prompts:
    """``n`` prompts of ``length`` tokens from HALF up; the answer is the last one's successor."""
    if distinct:
        tokens = torch.stack([torch.randperm(HALF, generator=generator)[:length] for _ in range(n)])
    else:
        tokens = torch.randint(0, HALF, (n, length), generator=generator)
    tokens = HALF + tokens
    return Prompts(tokens, HALF + (tokens[:, -1] - HALF + 1) % HALF, tokens[:, 0])


def copy_first(n: int, length: int, generator: torch.Generator) -> Prompts:
    tokens = torch.randint(0, HALF, (n, length), generator=generator)
    return Prompts(tokens, tokens[:, 0], tokens[:, 0])


def mixed(*parts: Prompts) -> Prompts:
    return Prompts(*(torch.cat(column) for column in zip(*(vars(p).values() for p in parts))))


@dataclass(frozen=True)
class TwoTasks:
    """The key-value model fine-tuned on lookup and increment prompts, half a batch each."""

    keyvalue: KeyValueRecipe = field(default_factory=KeyValueRecipe)
    name: str = "two-tasks"
    seed: int = 0
    batch_size: int = 64
    seq_len: int = 13
    steps: int = 300
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    checkpoint_every: int = 300

    def batch(self, generator: torch.Generator) -> Prompts:
        half = self.batch_size // 2
        return mixed(prompts(self.keyvalue, half, generator), increment(half, self.seq_len, True, generator))


@dataclass(frozen=True)
class Scratch:
    """A 2-layer, 4-head model trained from scratch on copy-first and increment prompts."""

    name: str = "scratch"
    seed: int = 0
    d_vocab: int = 2 * HALF
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 256
    seq_len: int = 12
    batch_size: int = 64
    steps: int = 1500
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    checkpoint_every: int = 1500

    def batch(self, generator: torch.Generator) -> Prompts:
        half = self.batch_size // 2
        return mixed(copy_first(half, self.seq_len, generator), increment(half, self.seq_len, False, generator))


def task_slice(name: str, batch: Prompts) -> DataSlice:
    """An ``answer_loss`` slice at the last position."""
    n = len(batch.tokens)
    last = torch.full((n, 1), batch.tokens.shape[1] - 1)
    mask = torch.ones_like(batch.tokens, dtype=torch.bool)
    return DataSlice(name, name, batch.tokens, mask, "answer_loss", last, batch.answers[:, None], None, "position -1")


def answered_by(letters: tuple[int, ...], n: int, generator: torch.Generator) -> Prompts:
    """``n`` first-unique prompts whose answer at the last position is one of ``letters``."""
    recipe = FirstUniqueRecipe()
    tokens = class_prompts(recipe, letters, n, generator)
    answers = first_unique_answers(tokens, recipe.unknown)[:, -1]
    return Prompts(tokens, answers, answers)


def cases(out: Path):
    """(case, its model's ``load_model`` arguments, its slices) for every case the module docstring lists."""
    reference = default_reference_dir()
    induction = train_induction(InductionRecipe(), reference, progress=False, echo=lambda _: None)[-1]
    spec = load_model(str(induction)).spec
    yield (
        "induction",
        (str(induction), None),
        [
            DataSlice.of_tokens(k, k, synthetic_tokens(k, spec.d_vocab, 96, 48, seed))
            for seed, k in enumerate(("repeated", "random"))
        ],
    )
    recipe = KeyValueRecipe()
    keyvalue = train_keyvalue(recipe, reference, progress=False, echo=lambda _: None)[-1]
    generator = torch.Generator().manual_seed(1)
    yield (
        "keyvalue",
        (str(keyvalue), None),
        [
            task_slice("task", prompts(recipe, 256, generator)),
            task_slice("trivial", prompts(replace(recipe, n_pairs=1), 256, generator)),
        ],
    )
    from transformers import GPTNeoXForCausalLM

    two_tasks = TwoTasks()
    [*_, final] = train_cached(
        two_tasks,
        out,
        lambda _: GPTNeoXForCausalLM.from_pretrained(keyvalue),
        TwoTasks.batch,
        answer_loss,
        lambda _: None,
        False,
    )
    yield (
        "two-tasks",
        (str(final), None),
        [
            task_slice("lookup", prompts(recipe, 256, generator)),
            task_slice("increment", increment(256, 13, True, generator)),
        ],
    )
    scratch = Scratch()
    [*_, final] = train_cached(scratch, out, gpt_neox, Scratch.batch, answer_loss, lambda _: None, False)
    yield (
        "scratch",
        (str(final), None),
        [
            task_slice("first", copy_first(256, 12, generator)),
            task_slice("increment", increment(256, 12, False, generator)),
        ],
    )
    [*_, weights] = train_first_unique(FirstUniqueRecipe(), reference, progress=False, echo=lambda _: None)
    generator = torch.Generator().manual_seed(2)
    yield (
        "first-unique",
        (str(weights.parent / NATIVE_CONFIG), str(weights)),
        [task_slice(head, answered_by(letters, 256, generator)) for head, letters in HEAD_LETTERS.items()],
    )


def ari_of(labels: np.ndarray, truth: np.ndarray) -> str:
    return f"{adjusted_rand_score(truth, labels):.3f}"


def alternatives(usage: np.ndarray, truth: np.ndarray) -> tuple[str, str, str]:
    """The ARI of a Gaussian mixture (k by BIC), of Ward clustering (k by silhouette), k = 2 .. 6, and
    of HDBSCAN (clusters of at least 5 % of the prompts; its noise points one cluster more)."""
    mixtures = [GaussianMixture(k, random_state=0, reg_covar=1e-3).fit(usage) for k in range(1, 7)]
    mixture = min(mixtures, key=lambda m: m.bic(usage)).predict(usage)
    wards = [AgglomerativeClustering(k).fit_predict(usage) for k in range(2, 7)]
    ward = max(wards, key=lambda labels: silhouette_score(usage, labels))
    density = HDBSCAN(min_cluster_size=max(2, len(usage) // 20), copy=True).fit_predict(usage)
    return ari_of(mixture, truth), ari_of(ward, truth), ari_of(density, truth)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where the two extra models are trained.")
@click.option("--case", "only", multiple=True, help="Measure only these cases (default: every one).")
def main(out: Path | None, only: tuple[str, ...]) -> None:
    out = out or Path(tempfile.mkdtemp(prefix="discovery-limit-"))
    torch.manual_seed(0)
    columns = ("first-order", "per-slice", "discover", "k", "mixture", "ward", "hdbscan", "supervised")
    click.echo(f"{'case':<14}" + "".join(f"{c:>12}" for c in columns))
    medians = []
    for case, source, slices in cases(out):
        if only and case not in only:
            continue
        model = load_model(*source)
        layout = ChannelLayout(model.spec)
        names = [c.name for c in layout.channels]
        moments = accumulate_moments(model, slices, progress=False)
        compression = Compression(decompose(moments, model.weights), 0.99, None, 1e-3)
        truth = np.repeat(np.arange(len(slices)), [s.n_sequences for s in slices])
        k = len(slices)
        first = torch.cat(
            [
                slice_scores(model, compression, moments, layout, s, progress=False, edges=False).sequence_effects
                for s in slices
            ]
        ).double()
        first = first / first.norm(dim=1, keepdim=True).clamp_min(1e-12)
        first_order = KMeans(k, n_init=10, random_state=0).fit_predict(first.numpy())
        own = Interventions(model, compression, {s.name: Baseline.measure(model, s, ABLATIONS[0]) for s in slices})
        per_slice = np.log1p(
            np.concatenate([(a - c).T.numpy() for c, a in (ablation_losses(own, s, 4096, False) for s in slices)]).clip(
                0
            )
        )
        per_slice_labels = KMeans(k, n_init=10, random_state=0).fit_predict(per_slice)
        interventions = Interventions(model, compression, {})
        usage = exact_usage(interventions, slices, "prompt", 10**9, ABLATIONS[0], 4096, seed=0, progress=False)
        found = discover(usage, names, max_situations=6, seed=0)
        labels = np.full(len(truth), -1)  # one situation: every prompt in one cluster
        start = dict(zip([s.name for s in slices], np.cumsum([0] + [s.n_sequences for s in slices])))
        for label, situation in enumerate(found.situations):
            labels[[start[name] + i for name, i in situation.origin]] = label
        logged = np.log1p(usage.effects.clip(0))
        mixture, ward, density = alternatives(logged, truth)
        accuracy = cross_val_score(LogisticRegression(max_iter=5000), logged, truth, cv=5).mean()
        figures = (
            ari_of(first_order, truth),
            ari_of(per_slice_labels, truth),
            ari_of(labels, truth),
            str(max(1, len(found.situations))),
            mixture,
            ward,
            density,
            f"{accuracy:.1%}",
        )
        click.echo(f"{case:<14}" + "".join(f"{f:>12}" for f in figures))
        for s in slices:
            effects = usage.effects[usage.sources[usage.prompt] == s.name]
            medians.append(
                f"{case:<14}{s.name:<10}" + "  ".join(f"{c} {m:+.2f}" for c, m in zip(names, np.median(effects, 0)))
            )
    click.echo("\nmedian exact effect per channel, one baseline for all prompts (nats):")
    click.echo("\n".join(medians))


if __name__ == "__main__":
    main()
