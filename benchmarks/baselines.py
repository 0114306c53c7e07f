"""The exact ablation effects of the project's reference models under every ablation baseline.

Ingests the final checkpoint of each shipped reference model on its slices once per
``--ablation`` kind and prints, per slice, each channel's effect (nats: the slice's loss with the
channel ablated minus without, on its held-out sample) side by side, with the circuit at 0.1 nats
and its faithfulness. The README's "Ablation baselines" table comes from this script:

    python benchmarks/baselines.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import ABLATIONS, IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.attention_only import NATIVE_CONFIG, AttentionOnlyRecipe, train_attention_only
from circuit_atlas.reference.induction import InductionRecipe, train_induction
from circuit_atlas.reference.keyvalue import KeyValueRecipe, train_keyvalue

MIN_EFFECT = 0.1
#: The kinds measured: the reference slices have no counterfactual prompts (tests/model/test_baselines.py
#: checks that kind on a slice that has them).
KINDS = [kind for kind in ABLATIONS if kind != "counterfactual"]


def models(reference: Path) -> dict[str, tuple[Path, list[str], list[str]]]:
    """Each reference model's source, its final checkpoint (as ``--checkpoint``) and the --data slices
    it is measured on."""
    quiet = {"progress": False, "echo": lambda _: None}
    induction = train_induction(InductionRecipe(), reference, **quiet)[-1]
    attention_only = train_attention_only(AttentionOnlyRecipe(), reference, **quiet)[-1]
    keyvalue = train_keyvalue(KeyValueRecipe(), reference, **quiet)[-1]
    synthetic = ["repeated", "random"]
    return {
        "induction-s0": (induction, [], synthetic),
        "induction-attn-s0": (attention_only.parent / NATIVE_CONFIG, [attention_only], synthetic),
        "keyvalue-s0": (keyvalue, [], [f"{name}={keyvalue.parent / name}.jsonl" for name in ("task", "trivial")]),
    }


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Artifact folder (default: temporary).")
def main(out: Path | None) -> None:
    out = out or Path(tempfile.mkdtemp(prefix="baselines-"))
    for model, (source, checkpoints, data) in models(default_reference_dir()).items():
        effects, circuits = {}, {}
        for ablation in KINDS:
            config = IngestConfig(ablation=ablation)
            [path] = ingest(
                str(source),
                [str(c) for c in checkpoints],
                data,
                out / ablation,
                config,
                progress=False,
                echo=lambda _: None,
            )
            activity = read_artifact(path).tables["activity"]
            for slice_name, rows in activity.groupby("slice", sort=False):
                effects[(slice_name, ablation)] = dict(zip(rows["block"], rows["ablation"]))
                members = rows[rows["ablation"] >= MIN_EFFECT].sort_values("effect_rank")
                faithful = members["faithfulness"].iloc[-1] if len(members) else None
                circuits[(slice_name, ablation)] = (len(members), faithful)
        slices = list(dict.fromkeys(s for s, _ in effects))
        channels = list(effects[(slices[0], KINDS[0])])
        click.echo(f"\n{model} ({(checkpoints or [source])[-1].name}): exact ablation effect, nats")
        for slice_name in slices:
            click.echo(f"  {slice_name:<16}" + "".join(f"{a:>10}" for a in KINDS))
            for channel in channels:
                values = "".join(f"{effects[(slice_name, a)][channel]:>10.3f}" for a in KINDS)
                click.echo(f"    {channel:<14}{values}")
            summary = "".join(
                f"{n:>4} {'-' if f is None else f'{f + 0.0:.2f}':>5}"
                for n, f in (circuits[(slice_name, a)] for a in KINDS)
            )
            click.echo(f"    {'circuit, F':<14}{summary}")


if __name__ == "__main__":
    main()
