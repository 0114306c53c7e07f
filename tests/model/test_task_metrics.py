"""Task metrics through every pass: padding changes nothing (on a causal and on a bidirectional
model), and on the reference model a task slice that needs induction puts the induction heads in
its circuit."""

import json

import torch
from builders import task_slice

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.attribution import SliceScores, slice_scores
from circuit_atlas.ingest.baselines import Baseline
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.fidelity import variant_losses
from circuit_atlas.ingest.interventions import Interventions, Variant
from circuit_atlas.ingest.metrics import sample_labels
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.statistics import accumulate_moments


def test_padding_changes_no_moment_loss_or_score(small_model):
    model = small_model
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, model.spec.d_vocab, (n,), generator=generator).tolist() for n in (10, 7, 10, 5, 7)]
    padded = task_slice("mixed", prompts)
    by_length = [task_slice(f"n{n}", [p for p in prompts if len(p) == n]) for n in (10, 7, 5)]
    together = accumulate_moments(model, [padded], progress=False)
    apart = accumulate_moments(model, by_length, progress=False)
    assert together.n_tokens == apart.n_tokens == sum(len(p) for p in prompts)
    for name, value in together.tensors().items():  # float32 activations, batched differently
        torch.testing.assert_close(
            value, apart.tensors()[name], rtol=1e-4, atol=1e-6 * float(value.abs().max()), msg=name
        )

    layout = ChannelLayout(model.spec)
    compression = Compression(decompose(together, model.weights), 0.8, None, 1e-3)
    # One baseline for every grouping (the mean over the real tokens of all the prompts), as the
    # padded slice measures it and as the slices of one length each do, weighted by their tokens.
    shared = Baseline.measure(model, padded, "mean")
    for name, value in shared.mean.items():
        parts = [(Baseline.measure(model, s, "mean").mean[name], s.n_tokens) for s in by_length]
        expected = sum(mean * n for mean, n in parts) / sum(n for _, n in parts)
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5, msg=name)
    interventions = Interventions(model, compression, {s.name: shared for s in [padded, *by_length]})
    variants = [Variant(), Variant.ablating(layout.heads(1)[0]), Variant.compressing(layout.mlp(0))]
    alone = torch.cat([variant_losses(interventions, variants, s, 4096) for s in by_length], dim=1)
    regrouped = variant_losses(interventions, variants, padded, 4096)[:, [0, 2, 1, 4, 3]]  # prompts by length
    torch.testing.assert_close(regrouped, alone, rtol=1e-5, atol=1e-6)

    scores = slice_scores(model, compression, together, layout, padded, progress=False)
    combined = SliceScores.combined(
        [slice_scores(model, compression, together, layout, s, progress=False) for s in by_length]
    )
    torch.testing.assert_close(scores.attribution, combined.attribution, rtol=1e-4, atol=1e-7)
    for name, value in scores.mean_norm.items():
        assert abs(value - combined.mean_norm[name]) < 1e-4 * max(1.0, abs(value)), name


def logit_diff_prompts(d_vocab: int, count: int, seed: int, repeat: bool) -> list[dict]:
    """A random segment, then (``repeat``) its start again, scored on the segment's next token
    against a later one; without the repeat the same tokens in a random order, where copying
    cannot help."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(8, 14, (), generator=generator))
        segment = torch.randperm(d_vocab, generator=generator)[:length].tolist()
        cut = int(torch.randint(3, length - 2, (), generator=generator))
        prompt = segment + segment[:cut]
        if not repeat:
            prompt = [prompt[i] for i in torch.randperm(len(prompt), generator=generator).tolist()]
        rows.append(
            {
                "tokens": prompt,
                "metric": "logit_diff",
                "position": -1,
                "answer": segment[cut],
                "counterfactual": segment[(cut + 2) % length],
            }
        )
    return rows


def test_an_induction_task_slice_puts_the_induction_heads_in_its_circuit(reference_checkpoints, tmp_path):
    truth = json.loads((reference_checkpoints[0].parent / "head_scores.json").read_text())[
        reference_checkpoints[-1].name
    ]
    induction = {f"L1H{h}" for h, score in enumerate(truth["induction"][1]) if score >= 0.5}
    data = []
    for name, repeat in (("task", True), ("shuffled", False)):
        (tmp_path / f"{name}.jsonl").write_text(
            "\n".join(json.dumps(row) for row in logit_diff_prompts(64, 160, 0, repeat)) + "\n"
        )
        data.append(f"{name}={tmp_path / name}.jsonl")
    [artifact] = ingest(
        str(reference_checkpoints[-1]), [], data, tmp_path / "out", IngestConfig(), progress=False, echo=lambda _: None
    )
    artifact = read_artifact(artifact)
    entry = next(s for s in artifact.manifest["slices"] if s["name"] == "task")
    assert (entry["metric"], entry["scored"]) == ("logit_diff", "position -1")
    activity = artifact.tables["activity"].set_index(["slice", "block"])["ablation"]
    assert induction
    for head in induction:  # ablating an induction head lowers the logit difference where copying helps
        assert activity[("task", head)] > 0.5 and activity[("task", head)] > 4 * abs(activity[("shuffled", head)])


def test_sampled_labels_follow_the_prediction_and_a_seed_draws_the_same_labels():
    probabilities = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.5, 0.5]])
    logits = probabilities.log().repeat(20000, 1).view(20000, 2, 4)
    labels = sample_labels(logits, torch.Generator().manual_seed(0))
    counts = torch.stack([torch.bincount(labels[:, i], minlength=4) for i in range(2)]) / 20000
    torch.testing.assert_close(counts, probabilities, atol=0.01, rtol=0)
    assert torch.equal(labels, sample_labels(logits, torch.Generator().manual_seed(0)))
