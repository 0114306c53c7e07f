"""Top examples per channel: the streamed top-k is the top-k of the whole slice, and on the reference
model the induction heads' strongest tokens are repeats, where they help."""

import torch
from builders import ingest_reference

from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.examples import TopTokens, context_window


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


def test_induction_heads_act_most_on_repeated_tokens(reference_checkpoints, tmp_path):
    """On repeated sequences (second half a copy of the first), the induction heads L1H0 and L1H1
    act most in the copy, where they lower the loss; every channel has examples of both rankings."""
    artifact = ingest_reference(
        reference_checkpoints[-1], tmp_path, IngestConfig(n_seq=48, examples=4, example_context=5)
    )
    examples, blocks = artifact.tables["examples"], artifact.tables["blocks"]
    readers = set(blocks["name"][~blocks["kind"].isin(["embed", "pos_embed"])])  # the embeddings read nothing
    half = 24  # the reference sequences are 48 tokens
    for head in ("L1H0", "L1H1"):
        top = examples[(examples.slice == "repeated") & (examples.ranking == "effect") & (examples.block == head)]
        assert top["rank"].tolist() == [1, 2, 3, 4]
        assert (top["position"] >= half).all() and (top["value"] < 0).all(), top
    for (slice_name, ranking), rows in examples.groupby(["slice", "ranking"]):
        assert set(rows["block"]) == (set(blocks["name"]) if ranking == "effect" else readers), (slice_name, ranking)
        assert (rows.groupby("block")["rank"].max() == 4).all()
        assert (rows["tokens"].map(len) <= 5 + 2).all() and (rows["focus"] <= 5).all()
    assert set(examples["slice"]) == {"repeated", "random"}
