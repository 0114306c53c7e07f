"""How well each edge score finds the induction mechanism's key edges, against path patching.

For each induction reference model (seeds 0 and 1, and the 4-head model), ingests the final
checkpoint on repeated tokens with the default settings and measures, independently of the
catalog, every head -> head edge's path-patching effect on the same held-out prompts with the
Hugging Face model's own forward (``reference/path_patching.py``). The key edges are those from a
previous-token head to an induction head's keys (the heads' own attention on fresh probes,
``reference.seeds.mechanisms``; partial previous-token heads count). It prints, per model:

- each score's ROC AUC of the key edges against every other head -> head edge (1 = every key edge
  above every other; an edge a score leaves unmeasured ranks last), and of the edges whose
  path-patching effect is at least :data:`LARGE` nats against the others;
- each score's Spearman correlation with the path-patching effects over the head -> head edges;
- the largest difference between the stored ``patched`` effects and path patching.

    python benchmarks/edge_scores.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np
import pandas as pd

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.slice_scorer import effect_sample
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.path_patching import head_edge_effects
from circuit_atlas.reference.seeds import PARTIAL_ATTENTION, final_checkpoints, mechanisms

SCORES = ("weight", "strength", "flow", "attribution", "attribution_signed", "patched", "path patching")
HEAD = r"L\d+H\d+$"
LARGE = 0.1  # nats: an edge path patching finds this large is one a score should rank high


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting one half (NaN scores rank last)."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    above = scores[positive][:, None] > scores[~positive][None, :]
    ties = scores[positive][:, None] == scores[~positive][None, :]
    return float((above + 0.5 * ties).mean())


def measure(final: Path, out: Path, config: IngestConfig) -> tuple[pd.DataFrame, set]:
    """The head -> head edges of ``final`` on repeated tokens with every score and path patching, and
    the key edges."""
    [path] = ingest(str(final), [], ["repeated"], out, config, progress=False, echo=lambda _: None)
    edges = read_artifact(path).tables["edges"]
    edges = edges[edges.writer.str.match(HEAD) & edges.reader.str.match(HEAD)].copy()
    data = load_slice("repeated", load_model(str(final)).spec, None, 48, config.n_seq, config.seed)
    prompts = effect_sample(data.split(config.holdout, config.seed)[1], config).tokens
    truth = head_edge_effects(final, prompts)
    edges["path patching"] = [truth[(e.writer, e.reader, e.role)] for e in edges.itertuples()]
    heads = mechanisms(final, PARTIAL_ATTENTION)
    key = {(w, r, "k") for w, a in heads.items() if a == "previous_token" for r, b in heads.items() if b == "induction"}
    return edges, key


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Artifact folder (default: temporary).")
def main(out: Path | None) -> None:
    out = out or Path(tempfile.mkdtemp(prefix="edge-scores-"))
    config = IngestConfig()
    for name, final in final_checkpoints(default_reference_dir()).items():
        edges, key = measure(final, out / name, config)
        positive = np.array([(e.writer, e.reader, e.role) in key for e in edges.itertuples()])
        truth = edges["path patching"]
        large = truth.to_numpy() >= LARGE
        click.echo(
            f"{name} ({final.name}): {len(edges)} head -> head edges, {positive.sum()} key "
            f"({', '.join(sorted(f'{w}->{r}.k' for w, r, _ in key))}); patched measured on "
            f"{edges.patched.notna().sum()}, largest |patched - path patching| "
            f"{np.nanmax(np.abs(edges.patched - truth)):.1e} nats; {large.sum()} edges of {LARGE} nats or more"
        )
        for score in SCORES:
            values = edges[score].to_numpy(dtype=float)
            spearman = pd.Series(values).corr(truth.reset_index(drop=True), method="spearman")
            click.echo(
                f"  {score:<20} ROC AUC key edges {roc_auc(values, positive):.3f}, large edges "
                f"{roc_auc(values, large):.3f}; Spearman vs path patching {spearman:.3f}"
            )


if __name__ == "__main__":
    main()
