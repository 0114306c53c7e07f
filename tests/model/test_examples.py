"""Top examples per channel: the streamed top-k is the top-k of the whole slice; on the reference
model every head's examples are its largest first-order effects as a plain Hugging Face computation
finds them, and the induction heads' strongest tokens are repeats, where they help."""

import itertools
from pathlib import Path

import pytest
import torch
from builders import ingest_reference, native_model, task_slice
from dense import dense_scores
from transformers import GPTNeoXForCausalLM

from circuit_atlas.ingest.attribution import slice_scores
from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.examples import TopTokens, context_window
from circuit_atlas.ingest.model_adapter import load_model
from circuit_atlas.ingest.statistics import accumulate_moments
from circuit_atlas.reference.seeds import mechanisms


def test_streamed_top_tokens_are_the_top_tokens_of_the_whole_slice():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 10, 4, generator=generator)  # [sequences, positions, channels]
    real = torch.rand(6, 10, generator=generator) > 0.2
    top = TopTokens(4, k=5, device=torch.device("cpu"))
    for rows, positions in ((slice(0, 2), slice(0, 10)), (slice(2, 3), slice(0, 4)), (slice(2, 3), slice(4, 10))):
        block = scores[rows, positions]
        top.update(
            block.abs(),
            block,
            torch.arange(rows.start, rows.stop),
            torch.arange(positions.start, positions.stop),
            real[rows, positions],
        )
    for rows in (slice(3, 6),):
        top.update(scores[rows].abs(), scores[rows], torch.arange(3, 6), torch.arange(10), real[rows])
    expected = []
    for channel in "abcd":
        j = "abcd".index(channel)
        flat = [(abs(float(scores[s, p, j])), s, p) for s in range(6) for p in range(10) if real[s, p]]
        for rank, (_, s, p) in enumerate(sorted(flat, reverse=True)[:5], 1):
            expected.append((channel, rank, s, p, float(scores[s, p, j])))
    assert top.rows(list("abcd")) == expected


def test_context_window_keeps_real_tokens_around_the_example():
    tokens = torch.arange(10, 20)
    real = torch.ones(10, dtype=torch.bool)
    real[8:] = False  # padding
    assert context_window(tokens, real, 5, 2) == ([13, 14, 15, 16], 2)
    assert context_window(tokens, real, 7, 3) == ([14, 15, 16, 17], 3)  # the padded next token is left out
    assert context_window(tokens, real, 0, 4) == ([10, 11], 0)


SLICES = ["repeated", "random"]  # as ingest_reference gives them


def independent_head_effects(checkpoint: Path, fit: list[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Per token and head [layer, head, sequence, position]: gᵀ(y - ȳ) with the plain Hugging Face
    model, no project code: y the head's write to the residual stream (its z through its columns of
    the attention output matrix), ȳ its mean over the ``fit`` token batches, g the gradient at the
    attention output of the summed per-sequence mean next-token loss of ``tokens``."""
    model = GPTNeoXForCausalLM.from_pretrained(checkpoint).float().eval()
    layers = model.gpt_neox.layers
    H = model.config.num_attention_heads
    captured = {}

    def capture(l):
        def hook(dense, inputs, output):
            captured[l] = (inputs[0], output)
            if output.requires_grad:
                output.retain_grad()

        return hook

    handles = [layer.attention.dense.register_forward_hook(capture(l)) for l, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            z_sum = {l: 0.0 for l in range(len(layers))}
            n = 0
            for batch in fit:
                model(input_ids=batch)
                z_sum = {l: z_sum[l] + captured[l][0].sum((0, 1)) for l in z_sum}
                n += batch.numel()
        logits = model(input_ids=tokens).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        loss.mean(1).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    effects = []
    for l, layer in enumerate(layers):
        z, out = captured[l]
        W = layer.attention.dense.weight  # [d_model, H * d_head], heads in order
        centred = (z - z_sum[l] / n).detach().unflatten(-1, (H, -1))  # [b, p, H, d_head]
        writes = torch.einsum("bphe,dhe->bphd", centred, W.detach().unflatten(1, (H, -1)))
        effects.append(torch.einsum("bphd,bpd->hbp", writes, out.grad))
    return torch.stack(effects)


def test_effect_examples_are_each_heads_largest_first_order_effects(reference_checkpoints, tmp_path):
    """The ``effect`` examples of every head on repeated sequences are its top tokens by |gᵀ(y - ȳ)|,
    with their values, as a plain Hugging Face computation finds them (ȳ over the fitting prompts of
    both slices, as the moments take it); and the induction heads (by their measured attention, the
    shipped model's ground truth) act most where a token repeats, mostly in the copy, where they help."""
    config = IngestConfig(n_seq=48, examples=4, example_context=5)
    final = reference_checkpoints[-1]
    artifact = ingest_reference(final, tmp_path, config)
    examples, blocks = artifact.tables["examples"], artifact.tables["blocks"]
    spec = load_model(str(final)).spec
    slices = [
        load_slice(a, spec, None, 48, config.n_seq, config.seed + i) for i, a in enumerate(["repeated", "random"])
    ]
    fit = [data.split(config.holdout, config.seed)[0].tokens for data in slices]
    effects = independent_head_effects(final, fit, slices[0].tokens)
    for l, h in itertools.product(range(spec.n_layers), range(spec.n_heads)):
        head = f"L{l}H{h}"
        stored = examples[(examples.slice == "repeated") & (examples.ranking == "effect") & (examples.block == head)]
        assert stored["rank"].tolist() == [1, 2, 3, 4], head
        mine = effects[l, h]
        expected = mine[torch.tensor(stored["sequence"].tolist()), torch.tensor(stored["position"].tolist())]
        torch.testing.assert_close(torch.tensor(stored["value"].tolist()), expected, rtol=1e-3, atol=1e-5)
        fourth = mine.abs().flatten().topk(4).values[-1]
        assert expected.abs().min() >= fourth * (1 - 1e-3), (head, expected, fourth)  # no larger token left out

    truth = mechanisms(final)
    induction = [head for head, mechanism in truth.items() if mechanism == "induction"]
    assert induction, truth
    top = examples[(examples.slice == "repeated") & (examples.ranking == "effect") & examples.block.isin(induction)]
    tokens = slices[0].tokens
    repeats = [int(tokens[s, p]) in tokens[s, :p].tolist() for s, p in zip(top["sequence"], top["position"])]
    half = tokens.shape[1] // 2
    assert all(repeats), top
    assert ((top["position"] >= half) & (top["value"] < 0)).mean() >= 0.75, top

    readers = set(blocks["name"][~blocks["kind"].isin(["embed", "pos_embed"])])  # the embeddings read nothing
    for (slice_name, ranking), rows in examples.groupby(["slice", "ranking"]):
        assert set(rows["block"]) == (set(blocks["name"]) if ranking == "effect" else readers), (slice_name, ranking)
        assert (rows.groupby("block")["rank"].max() == 4).all()
        assert (rows["tokens"].map(len) <= 5 + 2).all() and (rows["focus"] <= 5).all()
    assert set(examples["slice"]) == {"repeated", "random"}


def test_each_ranking_keeps_a_channels_top_tokens_with_their_dense_values(tmp_path):
    """On a right-padded task slice of a small model, each channel's stored examples are, by the
    dense computation of tests/dense.py: at their token, the value stored (``effect``: the signed
    gᵀ(y - E y); ``input``: the norm of the read-subspace input), ranked by magnitude, and no real
    token outside them larger (to float rounding: ties may fall either way on another machine)."""
    files = native_model(
        tmp_path, n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20, d_mlp=64, act_fn="gelu"
    )
    model = load_model(str(files.config), str(files.weights))
    generator = torch.Generator().manual_seed(8)
    data = task_slice("task", [torch.randint(0, 20, (n,), generator=generator).tolist() for n in (12, 7, 10, 5, 12)])
    moments = accumulate_moments(model, [data], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.8, None, 1e-3)
    layout = ChannelLayout(model.spec)
    k = 4
    scores = slice_scores(model, compression, moments, layout, data, progress=False, edges=False, examples=k)
    *_, effects, inputs = dense_scores(model, compression, moments, layout, data, per_token=True)
    orders = {
        "effect": ([c.name for c in (*layout.writers, layout.unembed)], effects, torch.abs),
        "input": ([c.name for c in layout.channels if c.read_roles], inputs, lambda v: v),
    }
    for ranking, (names, dense, magnitude) in orders.items():
        kept = {}
        for name, rank, sequence, position, value in scores.examples[ranking]:
            kept.setdefault(name, []).append((rank, sequence, position, value))
        for j, name in enumerate(names):
            rows = sorted(kept[name])
            assert [rank for rank, *_ in rows] == list(range(1, k + 1)), (ranking, name)
            values = dense[..., j].double()
            for _, sequence, position, value in rows:
                assert data.mask[sequence, position], (ranking, name)
                assert value == pytest.approx(float(values[sequence, position]), rel=1e-4, abs=1e-6), (ranking, name)
            sizes = [float(magnitude(torch.tensor(value))) for *_, value in rows]
            tolerance = 1e-5 * max(sizes[0], 1e-12)
            assert all(a >= b - tolerance for a, b in itertools.pairwise(sizes)), (ranking, name, sizes)
            chosen = {(sequence, position) for _, sequence, position, _ in rows}
            left_out = [float(magnitude(values[s, p])) for s, p in data.mask.nonzero().tolist() if (s, p) not in chosen]
            assert max(left_out) <= sizes[-1] + tolerance, (ranking, name)
