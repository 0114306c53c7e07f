"""The mutation score of the numeric core: do the tests catch wrong numbers?

Each mutant is one small textual change to one module of ``ingest/``, of the kind a refactor makes:
a wrong site, a dropped weighting, a sign, an off-by-one, a swapped argument. The script copies the
package into a temporary folder in the layout the installed wheel has, applies one mutant at a
time, and runs the tests that exercise that module (:data:`TESTS`) with ``pytest -x`` and a
timeout; a mutant is *killed* when they fail (or time out). It prints killed / survived per
module and every survivor with what it breaks. Too slow for CI (minutes): run it before closing
an issue that touches the numeric core, and keep the table in RESULTS.md.

    python benchmarks/mutants.py [--module statistics] [--timeout 600]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
#: Source folders and where they sit in the installed package.
PACKAGE = {
    "app": "circuit_atlas",
    "ingest": "circuit_atlas/ingest",
    "reference": "circuit_atlas/reference",
    "schema": "circuit_atlas/schema",
    "queries": "circuit_atlas/queries",
}
#: The tests that exercise each module.
TESTS = {
    "statistics": ["tests/model/test_moments.py", "tests/model/test_key_moments.py"],
    "compression": ["tests/fast/test_compression_math.py", "tests/model/test_planted.py"],
    "attribution": ["tests/model/test_attribution.py", "tests/model/test_examples.py"],
    "structural": ["tests/model/test_structural.py", "tests/model/test_planted.py"],
    "fidelity": ["tests/model/test_fidelity.py", "tests/model/test_interventions.py"],
    "faithfulness": ["tests/model/test_faithfulness.py", "tests/model/test_attention_only.py"],
    "edge_patching": ["tests/model/test_edge_patching.py"],
    "slice_scorer": [
        "tests/model/test_held_out.py",
        "tests/model/test_sampled_estimators.py",
        "tests/model/test_keyvalue.py",
        "tests/model/test_situations.py",
    ],
    "situations": ["tests/model/test_situations.py"],
}


@dataclass(frozen=True)
class Mutant:
    module: str  # ingest/<module>.py
    old: str  # text that occurs exactly once in the module
    new: str
    breaks: str  # what it gets wrong


MUTANTS = [
    # statistics
    Mutant("statistics", 'm.G_attn[l] += outer(grads[site("attn_out", l)])',
           'm.G_attn[l] += outer(grads[site("mlp_out", l)])', "attention Fisher from the MLP output's gradient"),
    Mutant("statistics", 'q = (acts[site("q", l)] - w.b_Q[l]) * keep', 'q = acts[site("q", l)] * keep',
           "qq with its bias kept"),
    Mutant("statistics", 'm.G_embed += outer(grads[site("embed")])', 'm.G_embed += outer(grads[site("final_x")])',
           "embedding Fisher from the unembedding input's gradient"),
    Mutant("statistics", 'torch.einsum("bhp,bphe,bphf->hef", received, v, v)',
           'torch.einsum("bhp,bphe,bphf->hef", received.sqrt(), v, v)', "value moment with wrong attention weights"),
    Mutant("statistics", "m.y_mlp_mean[l] += (y * keep).double().sum((0, 1))",
           "m.y_mlp_mean[l] += y.double().sum((0, 1))", "MLP mean over padded positions too"),
    Mutant("statistics", "m.S_final += outer(final)", "m.S_final += outer(final - final.mean(-1, keepdim=True))",
           "unembedding input moment of a centred input"),
    # compression
    Mutant("compression", 'Side(S_inverse_root @ U, S_inverse_root @ U, S_root @ U)',
           'Side(S_root @ U, S_inverse_root @ U, S_root @ U)', "read directions S^{1/2} U"),
    Mutant("compression", 'Side(G_inverse_root @ V, G_root @ V, G_inverse_root @ V)',
           'Side(G_root @ V, G_root @ V, G_inverse_root @ V)', "write directions G^{1/2} V"),
    Mutant("compression", "< k.unsqueeze(-1)).to(side.project_in)", "< k.unsqueeze(-1) + 1).to(side.project_in)",
           "projector one direction past the rank"),
    Mutant("compression", "return float(sigma[: self.rank(channel, role)].square().sum()) / total",
           "return float(sigma[: self.rank(channel, role) + 1].square().sum()) / total", "coverage one value off"),
    Mutant("compression", "ranks = (covered < rank_fraction - NOISE_SHARE).sum(-1) + 1",
           "ranks = (covered < rank_fraction - NOISE_SHARE).sum(-1)", "ranks one short of the rank fraction"),
    # attribution
    Mutant("attribution", "activity_signed += effects.double().sum(0)",
           "activity_signed += effects.double().abs().sum(0)", "signed activity summed as absolute values"),
    Mutant("attribution", "yield slice(start, min(start + step, n_seq)), slice(0, length)",
           "yield slice(start, min(start + step, n_seq)), slice(0, length - 1)", "blocks drop the last token"),
    Mutant("attribution", "((centred[:, :, mlp] + writer_means[mlp]).norm(dim=-1) * keep)",
           "(centred[:, :, mlp].norm(dim=-1) * keep)", "MLP mean norm of the centred output"),
    Mutant("attribution", "signed_sum += edge_sums.double().sum(0)", "signed_sum += edge_sums.double().abs().sum(0)",
           "signed edge attribution summed as absolute values"),
    Mutant("attribution", "projected = projected - g.mean(-1, keepdim=True)", "projected = projected",
           "LayerNorm pull-back without its mean term"),
    # structural
    Mutant("structural", "strength / norms.clamp_min(1e-300)", "strength / norms.clamp_min(1e-300) ** 0.5",
           "weight normalised by a square root"),
    Mutant("structural", "quadratic = ((output_moment(writers[j], moments).to(**f32) @ read_matrix) * read_matrix)",
           "quadratic = ((output_moment(writers[j], moments).to(**f32) @ read_matrix))",
           "flow numerator without its second factor"),
    Mutant("structural", "_stacked([b * s for b, s in zip(write_bases, write_importance)])",
           "_stacked([b for b, s in zip(write_bases, write_importance)])", "strength without the writer's importances"),
    Mutant("structural", "total = written.sum(1, keepdim=True)", "total = written.amax(1, keepdim=True)",
           "flow against the largest writer, not all"),
    # fidelity
    Mutant("fidelity", "loss_recovered(mean_clean, float(c.mean()), float(a.mean()))",
           "loss_recovered(mean_clean, float(a.mean()), float(c.mean()))", "per-channel fidelity with compressed and ablated swapped"),
    Mutant("fidelity", "return {name: float(e) for name, e in zip(names, (ablated - clean).mean(1))}",
           "return {name: float(e) for name, e in zip(names, (clean - ablated).mean(1))}", "effects with the wrong sign"),
    Mutant("fidelity", "differences.std(1) / n**0.5", "differences.std(1) / n", "standard error over n, not sqrt(n)"),
    Mutant("fidelity", "return 1.0 - (compressed - clean) / (ablated - clean)",
           "return 1.0 - (compressed - clean) / (ablated - compressed)", "loss recovered against the wrong span"),
    # faithfulness
    Mutant("faithfulness", "return (none - loss) / (none - clean) + 0.0", "return (clean - loss) / (none - clean) + 0.0",
           "faithfulness against the wrong end"),
    Mutant("faithfulness", "return sorted(channels, key=lambda c: (-effects[c.name], c.order))",
           "return sorted(channels, key=lambda c: (effects[c.name], c.order))", "curve in ascending effect order"),
    Mutant("faithfulness", "if value >= target:\n                kept, reached, dropped = rest, value, True",
           "if value >= target - 0.2:\n                kept, reached, dropped = rest, value, True",
           "pruning that drops needed channels"),
    Mutant("faithfulness", "k = next(k for k, f in enumerate(curve) if f is not None and f >= target)",
           "k = next(k for k, f in enumerate(curve) if f is not None and f >= target) - 1", "prefix one short of the target"),
    # edge patching
    Mutant("edge_patching", "delta = (base[:, :, channel.head] - own[:, :, channel.head]) @ W_O",
           "delta = (own[:, :, channel.head] - base[:, :, channel.head]) @ W_O", "head writer's change with the wrong sign"),
    Mutant("edge_patching", 'patched_input(site("resid_pre", l), index)', 'patched_input(site("resid_pre", 0), index)',
           "head readers read layer 0's stream"),
    Mutant("edge_patching", "(losses[:-1] - losses[-1]).mean(1)", "(losses[:-1] - losses[0]).mean(1)",
           "effects against the first edge, not the clean run"),
    Mutant("edge_patching", "order = torch.sort(-values, stable=True).indices[:count]",
           "order = torch.sort(values, stable=True).indices[:count]", "the smallest edges patched, not the largest"),
    # slice scorer
    Mutant("slice_scorer", "known = [weights[s] * error for s in weights",
           "known = [weights[s] ** 0.5 * error for s in weights", "union's error weights not squared"),
    Mutant("slice_scorer", "return held_out.spread(max(1, by_tokens, config.effect_prompts))",
           "return held_out.spread(max(1, by_tokens))", "the prompt floor ignored"),
    Mutant("slice_scorer", "max(self.scores.activity.values()) < FLAT_SHARE * largest",
           "max(self.scores.activity.values()) > FLAT_SHARE * largest", "flat-gradient flag inverted"),
    Mutant("slice_scorer", "self.samples[data.name] = effect_sample(data.split(config.holdout, config.seed)[1], config)\n        self.baselines",
           "self.samples[data.name] = effect_sample(data.split(config.holdout, config.seed)[0], config)\n        self.baselines",
           "a situation measured on its fitting prompts"),
    # situations
    Mutant("situations", "key=lambda m: (-len(m), m[0]))", "key=lambda m: (len(m), m[0]))", "situations smallest first"),
    Mutant("situations", "if len(members) >= 2]", "if len(members) >= 1]", "one-prompt situations kept"),
    Mutant("situations", "for i in np.argsort(mean)[:3]]", "for i in np.argsort(-mean)[:3]]",
           "descriptions name the channels that hurt most"),
    Mutant("situations", "origin = [(s.name, i) for s in slices for i in range(s.n_sequences)]",
           "origin = [(slices[0].name, i) for s in slices for i in range(s.n_sequences)]", "prompts credited to the first slice"),
]  # fmt: skip


def package_copy(folder: Path) -> Path:
    """The package's source laid out as installed, under ``folder``; returns its ingest folder."""
    for source, target in PACKAGE.items():
        shutil.copytree(ROOT / source, folder / target, ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
    return folder / "circuit_atlas" / "ingest"


def run_tests(folder: Path, tests: list[str], timeout: int) -> bool:
    """Whether the tests pass on the package under ``folder``."""
    env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@click.command()
@click.option("--module", "modules", multiple=True, help="Only these modules (default: all).")
@click.option("--timeout", default=600, show_default=True, help="Seconds per mutant's test run.")
def main(modules: tuple[str, ...], timeout: int) -> None:
    chosen = [m for m in MUTANTS if not modules or m.module in modules]
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        folder = Path(tmp)
        ingest = package_copy(folder)
        shutil.copytree(ROOT / "reference" / "checkpoints", folder / "circuit_atlas/reference/checkpoints")
        for module in sorted({m.module for m in chosen}):
            if not run_tests(folder, TESTS[module], timeout):
                raise click.ClickException(f"the tests of {module} fail without a mutant: fix them first")
        results = defaultdict(list)
        for mutant in chosen:
            path = ingest / f"{mutant.module}.py"
            original = path.read_text()
            if original.count(mutant.old) != 1:
                raise click.ClickException(
                    f"{mutant.module}: the mutant's text occurs {original.count(mutant.old)} times"
                )
            path.write_text(original.replace(mutant.old, mutant.new))
            started = time.time()
            killed = not run_tests(folder, TESTS[mutant.module], timeout)
            path.write_text(original)
            results[mutant.module].append((mutant, killed))
            click.echo(
                f"{'killed  ' if killed else 'SURVIVED'} {mutant.module}: {mutant.breaks} ({time.time() - started:.0f} s)"
            )
    click.echo("\nmodule          killed / mutants")
    for module, outcomes in results.items():
        click.echo(f"{module:<15} {sum(k for _, k in outcomes)} / {len(outcomes)}")
    survivors = [m for outcomes in results.values() for m, killed in outcomes if not killed]
    click.echo("survivors: " + ("; ".join(f"{m.module}: {m.breaks}" for m in survivors) or "none"))


if __name__ == "__main__":
    main()
