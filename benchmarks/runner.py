"""Time the transformer runner against the TransformerBridge forward it replaced, in one process.

    python benchmarks/runner.py [--shape gpt2-small] [--batch 4] [--seq-len 128] [--repeats 5] [--device cpu]

A GPT-2 configuration with random weights (vocabulary 50257) is saved, booted as the bridge in
compatibility mode (what ``load_model`` ran before) and loaded on the runner. Each pass is what
the statistics pass does: logits, then ``torch.autograd.grad`` of a summed cross-entropy to the
activations at every layer's ``hook_attn_out``, with the embedding output made a leaf (no weight
gradients). ``pattern hook`` also captures every ``hook_pattern``, which takes the runner off
``scaled_dot_product_attention`` onto the explicit softmax. Prints the median seconds of
``--repeats`` timed passes (bridge and runner alternating) after one warm-up, and runner / bridge.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click
import torch

from circuit_atlas.ingest.model_adapter import load_model, site

SHAPES = {
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
}


def one_pass(run, tokens: torch.Tensor, n_layers: int, backward: bool, patterns: bool) -> None:
    """Forward with capture at hook_attn_out (and hook_pattern), then the gradients there."""
    captured = {}

    def leaf(activation, hook):
        return activation.detach().requires_grad_(backward)

    def capture(activation, hook):
        captured[hook.name] = activation

    names = [site("attn_out", l) for l in range(n_layers)] + [site("pattern", l) for l in range(n_layers) if patterns]
    logits = run(tokens, [(site("embed"), leaf), *((name, capture) for name in names)])
    if backward:
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        torch.autograd.grad(loss, [captured[site("attn_out", l)] for l in range(n_layers)])


def seconds(run, tokens, n_layers, backward, patterns, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.enable_grad() if backward else torch.no_grad():
        one_pass(run, tokens, n_layers, backward, patterns)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


@click.command()
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="gpt2-small", show_default=True)
@click.option("--batch", default=4, show_default=True)
@click.option("--seq-len", default=128, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def main(shape: str, batch: int, seq_len: int, repeats: int, device: str) -> None:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    device = torch.device(device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        GPT2LMHeadModel(GPT2Config(**SHAPES[shape], n_positions=max(1024, seq_len))).save_pretrained(folder)
        bridge = TransformerBridge.boot_transformers(folder, device=str(device), dtype=torch.float32)
        bridge.enable_compatibility_mode(disable_warnings=True)
        for parameter in bridge.parameters():
            parameter.requires_grad_(False)
        model = load_model(str(Path(folder)), device=device)
    tokens = torch.randint(0, model.spec.d_vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    runners = {"bridge": lambda t, hooks: bridge.run_with_hooks(t, fwd_hooks=hooks), "runner": model.run}
    threads = torch.get_num_threads()
    print(f"{shape}, {batch} x {seq_len} tokens, {device}, torch {torch.__version__}, {threads} threads")
    print(f"{'pass':<32}{'bridge s':>10}{'runner s':>10}{'runner/bridge':>15}")
    for label, backward, patterns in (
        ("forward", False, False),
        ("forward + backward", True, False),
        ("forward + backward, pattern hook", True, True),
    ):
        times = {name: [] for name in runners}
        for i in range(repeats + 1):  # alternating, so that a change in machine load hits both alike
            for name, run in runners.items():
                elapsed = seconds(run, tokens, model.spec.n_layers, backward, patterns, device)
                if i:  # the first round warms up
                    times[name].append(elapsed)
        bridge_s, runner_s = (statistics.median(times[name]) for name in ("bridge", "runner"))
        print(f"{label:<32}{bridge_s:>10.3f}{runner_s:>10.3f}{runner_s / bridge_s:>15.2f}")


if __name__ == "__main__":
    main()
