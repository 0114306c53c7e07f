"""On a CUDA device the runner computes what it computes on the CPU, on its fused attention path
(flash or memory-efficient kernels) and on the explicit softmax, and a checkpoint really saved from
a GPU loads on the CPU."""

import torch
from builders import native_model, random_llama, random_neox

from circuit_atlas.ingest.metrics import sample_labels
from circuit_atlas.ingest.model_adapter import load_model, site


def test_runner_on_cuda_matches_the_cpu_on_both_attention_paths(tmp_path):
    for folder in (random_neox(tmp_path / "neox"), random_llama(tmp_path / "llama")):
        cpu, cuda = load_model(str(folder)), load_model(str(folder), device="cuda")
        tokens = torch.randint(0, cpu.spec.d_vocab, (4, 16), generator=torch.Generator().manual_seed(0))
        real = torch.ones_like(tokens, dtype=torch.bool)
        real[1, 9:] = False
        patterns = [(site("pattern", l), lambda a, hook: a) for l in range(cpu.spec.n_layers)]
        with torch.no_grad():
            for mask in (None, real):
                expected = cpu.run(tokens, attention_mask=mask)
                for hooks in ((), patterns):
                    got = cuda.run(tokens, hooks, attention_mask=mask).cpu()
                    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_state_dict_saved_from_a_gpu_loads_on_the_cpu(tmp_path):
    files = native_model(
        tmp_path, n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20, d_mlp=64, act_fn="gelu"
    )
    state = torch.load(files.weights, weights_only=True)
    torch.save({"state_dict": {k: v.cuda() for k, v in state.items()}, "step": 3}, files.weights)
    model = load_model(str(files.config), str(files.weights))
    assert model.device.type == "cpu"
    tokens = torch.randint(0, 20, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            torch.log_softmax(model.run(tokens), -1),
            torch.log_softmax(files.reference(tokens), -1),
            atol=1e-5,
            rtol=1e-4,
        )


def test_a_seed_samples_the_same_fisher_labels_on_cuda_and_the_cpu():
    logits = torch.randn(64, 8, 1000, generator=torch.Generator().manual_seed(1))
    on_cpu = sample_labels(logits, torch.Generator().manual_seed(3))
    on_cuda = sample_labels(logits.cuda(), torch.Generator().manual_seed(3)).cpu()
    assert (on_cpu == on_cuda).float().mean() > 0.999  # a draw on a cumulative-sum boundary may differ
