"""Top examples per channel: the streamed top-k is the top-k of the whole slice; on the reference
model every head's examples are its largest first-order effects as a plain Hugging Face computation
finds them, and the induction heads' strongest tokens are repeats, where they help."""

import itertools
from pathlib import Path

import torch
from builders import ingest_reference
from transformers import GPTNeoXForCausalLM

from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.data import load_slice
from circuit_atlas.ingest.examples import TopTokens, context_window
from circuit_atlas.ingest.model_adapter import load_model
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
