"""Time every stage of an ingest against a bare forward+backward of the same model over the same tokens.

    python benchmarks/ingest.py --shape gpt2-small --tokens 4096 [--device cuda] [--json out.json]

Shapes: ``reference`` (the project's trained induction model, final checkpoint), ``gpt2-small``
and ``gpt2-medium`` (GPT-2 configurations with random weights, vocabulary 50257). The data is the
built-in ``random`` slice (``--data`` adds more) of ``--tokens`` tokens per slice in sequences of
``--seq-len``.

The bare pass is what a training step costs without the optimizer: the Hugging Face model with
its fused attention (``sdpa``), the next-token loss, ``backward()`` with weight gradients, over
the ingest's tokens in batches of ``--batch-tokens``, timed in the same process as the ingest.
Every stage of the ingest (the pipeline's own stage names) is timed with its peak host memory
(resident set, reset before each stage) and peak GPU memory, and printed with its ratio to the
bare pass over all the ingest's tokens; ``new slice`` is a slice's attribution, ablation and faithfulness over
the bare pass on that slice alone. ``--profile STAGE`` runs a stage under the torch profiler and prints
its costliest operators (device time on a GPU).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import torch

from circuit_atlas.ingest.config import SITUATION_UNITS, IngestConfig
from circuit_atlas.ingest.data import synthetic_tokens
from circuit_atlas.ingest.pipeline import ingest

GPT2_SHAPES = {
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
}


def reset_peak_rss() -> None:
    """Start a new high-water mark of this process's resident set (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: steadier than wall time on a shared CPU
    peak_rss_gib: float = 0.0
    peak_gpu_gib: float = 0.0


@dataclass
class Meter:
    """The pipeline's profile hook: accumulates each stage's time and peak memory."""

    device: str
    stages: dict[str, Stage] = field(default_factory=dict)
    profiled: tuple[str, ...] = ()  # stages run under the torch profiler, its top operators printed

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, name: str):
        stage = self.stages.setdefault(name, Stage(name))
        self.sync()
        reset_peak_rss()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start, cpu_start = time.perf_counter(), time.process_time()
        profiler = self.profiler() if name in self.profiled else nullcontext()
        try:
            with profiler:
                yield
        finally:
            self.sync()
            if name in self.profiled:
                self.print_profile(name, profiler)
            stage.seconds += time.perf_counter() - start
            stage.cpu_seconds += time.process_time() - cpu_start
            stage.peak_rss_gib = max(stage.peak_rss_gib, peak_rss_gib())
            if self.device.startswith("cuda"):
                stage.peak_gpu_gib = max(stage.peak_gpu_gib, torch.cuda.max_memory_allocated() / 2**30)

    def profiler(self) -> torch.profiler.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.startswith("cuda"):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        return torch.profiler.profile(activities=activities, record_shapes=True)

    def print_profile(self, name: str, profiler: torch.profiler.profile) -> None:
        """The stage's operators that took the most time (on the GPU, device time), by input shape."""
        key = "self_cuda_time_total" if self.device.startswith("cuda") else "self_cpu_time_total"
        table = profiler.key_averages(group_by_input_shape=True).table(
            sort_by=key, row_limit=25, max_name_column_width=40, max_shapes_column_width=80
        )
        click.echo(f"profile of {name!r}:\n{table}")


def gpt2_model(folder: Path, shape: str, seq_len: int) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        **GPT2_SHAPES[shape],
        n_positions=max(1024, seq_len),
        vocab_size=50257,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def reference_model() -> Path:
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.induction import InductionRecipe, train_induction

    return train_induction(InductionRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)[-1]


def bare_pass(model_dir: Path, tokens: torch.Tensor, batch_tokens: int, device: str) -> Stage:
    """Forward and backward (weight gradients included) of the HF model with sdpa attention."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(device)
    model.eval()
    meter = Meter(device)
    rows = max(1, batch_tokens // tokens.shape[1])
    with meter("bare"):
        for start in range(0, tokens.shape[0], rows):
            batch = tokens[start : start + rows].to(device)
            model(input_ids=batch, labels=batch).loss.backward()
            model.zero_grad(set_to_none=True)
    del model
    return meter.stages["bare"]


@click.command()
@click.option("--shape", type=click.Choice(["reference", *GPT2_SHAPES]), default="reference", show_default=True)
@click.option("--tokens", default=8192, show_default=True, help="Tokens per slice.")
@click.option("--seq-len", type=int, help="Tokens per sequence  [default: the model's context, at most 128]")
@click.option("--data", "data", multiple=True, default=["random"], show_default=True, help="Slices (built-ins).")
@click.option("--batch-tokens", default=4096, show_default=True)
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--energy", type=float, help="Fix the rank fraction (skip the search), as the ingest option.")
@click.option("--profile", "profiled", multiple=True, help="Profile this stage (e.g. 'attribution random').")
@click.option(
    "--situations", default=0, show_default=True, help="Discover up to this many situations, as the ingest option."
)
@click.option("--situation-unit", type=click.Choice(SITUATION_UNITS), default=SITUATION_UNITS[0], show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures here."
)
def main(
    shape: str,
    tokens: int,
    seq_len: int | None,
    data: tuple[str, ...],
    batch_tokens: int,
    device: str,
    energy: float | None,
    json_path: Path | None,
    profiled: tuple[str, ...],
    situations: int,
    situation_unit: str,
) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = reference_model() if shape == "reference" else gpt2_model(scratch / "model", shape, seq_len or 128)
        context = 48 if shape == "reference" else 1024
        seq_len = seq_len or min(context, 128)
        n_seq = max(2, tokens // seq_len)
        d_vocab = 64 if shape == "reference" else 50257
        all_tokens = torch.cat([synthetic_tokens(kind, d_vocab, n_seq, seq_len, i) for i, kind in enumerate(data)])
        bare = bare_pass(model_dir, all_tokens, batch_tokens, device)
        config = IngestConfig(
            seq_len=seq_len,
            n_seq=n_seq,
            batch_tokens=batch_tokens,
            energy=energy,
            situations=situations,
            situation_unit=situation_unit,
        )
        meter = Meter(device, profiled=profiled)
        started, cpu_started = time.perf_counter(), time.process_time()
        ingest(
            str(model_dir),
            [],
            list(data),
            scratch / "artifacts",
            config,
            device,
            progress=False,
            echo=lambda _: None,
            profile=meter,
        )
        whole, whole_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    machine = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    )
    click.echo(
        f"{shape} on {device} ({machine}), {len(data)} slice(s) x {n_seq * seq_len:,} tokens "
        f"(seq_len {seq_len}, batch {batch_tokens} tokens); torch {torch.__version__}"
    )
    click.echo(
        f"bare forward+backward over {all_tokens.numel():,} tokens: {bare.seconds:.2f} s "
        f"({all_tokens.numel() / bare.seconds:,.0f} tok/s), peak host {bare.peak_rss_gib:.2f} GiB, "
        f"GPU {bare.peak_gpu_gib:.2f} GiB"
    )
    click.echo(f"{'stage':<28}{'seconds':>10}{'x bare':>9}{'CPU s':>10}{'x bare':>9}{'host GiB':>10}{'GPU GiB':>9}")
    for stage in meter.stages.values():
        click.echo(
            f"{stage.name:<28}{stage.seconds:>10.2f}{stage.seconds / bare.seconds:>9.2f}{stage.cpu_seconds:>10.2f}"
            f"{stage.cpu_seconds / bare.cpu_seconds:>9.2f}{stage.peak_rss_gib:>10.2f}{stage.peak_gpu_gib:>9.2f}"
        )
    load = meter.stages.get("load model", Stage(""))
    computed, computed_cpu = whole - load.seconds, whole_cpu - load.cpu_seconds
    click.echo(
        f"{'whole ingest (no model load)':<28}{computed:>10.2f}{computed / bare.seconds:>9.2f}"
        f"{computed_cpu:>10.2f}{computed_cpu / bare.cpu_seconds:>9.2f}"
    )
    new_slice = {}
    for name in data:
        stages = [meter.stages[f"{stage} {name}"] for stage in ("attribution", "ablation", "faithfulness")]
        new_slice[name] = {
            "wall": sum(s.seconds for s in stages) / (bare.seconds / len(data)),
            "cpu": sum(s.cpu_seconds for s in stages) / (bare.cpu_seconds / len(data)),
        }
        click.echo(
            f"new slice {name!r} (attribution + ablation + faithfulness) / bare over its tokens: "
            f"{new_slice[name]['wall']:.2f} (wall), {new_slice[name]['cpu']:.2f} (CPU time)"
        )
    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "shape": shape,
                    "device": device,
                    "machine": machine,
                    "slices": list(data),
                    "tokens_per_slice": n_seq * seq_len,
                    "seq_len": seq_len,
                    "batch_tokens": batch_tokens,
                    "torch": torch.__version__,
                    "bare": asdict(bare),
                    "stages": [asdict(s) for s in meter.stages.values()],
                    "whole_seconds": computed,
                    "whole_cpu_seconds": computed_cpu,
                    "new_slice_ratio": new_slice,
                    "date": time.strftime("%Y-%m-%d"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
