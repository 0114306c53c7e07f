"""The ANALOGOUS linking rule on hand-made fingerprints: what it links, its bounds, and that it does
not depend on the order in which checkpoints are published."""

import itertools
import random

from circuit_atlas.analogous import MIN_SIMILARITY, STRUCTURAL_KINDS, TOP_K, Fingerprinted, analogous_links
from circuit_atlas.ingest.fingerprints import similarity

FEATURES = ["lift_a", "lift_b", "importance", "kind_attn_head", "kind_mlp", "kind_unembed"]


def checkpoint(model: str, label: str, seed: int, heads: int = 6) -> list[Fingerprinted]:
    rng = random.Random(seed)
    blocks = [
        Fingerprinted(
            f"{model}@{label}/H{i}",
            f"{model}@{label}",
            model,
            "attn_head",
            [rng.random(), rng.random(), rng.random(), 1.0, 0.0, 0.0],
        )
        for i in range(heads)
    ]
    blocks.append(
        Fingerprinted(f"{model}@{label}/mlp", f"{model}@{label}", model, "mlp", [0.0, 0.0, 0.9, 0.0, 1.0, 0.0])
    )
    # unembeddings whose importance differs by model, so that they are not similar enough to link by it
    lift_a, importance = {"a": (0.8, 0.05), "b": (0.0, 0.95), "c": (0.0, 0.5)}[model]
    prints = [lift_a, 0.0, importance, 0.0, 0.0, 1.0]
    blocks.append(Fingerprinted(f"{model}@{label}/unembed", f"{model}@{label}", model, "unembed", prints))
    return blocks


CHECKPOINTS = [checkpoint("a", "1", 1), checkpoint("a", "2", 2), checkpoint("b", "1", 3), checkpoint("c", "1", 4, 9)]


def published_in(order: list[int]) -> dict:
    """The links a catalog ends with when the checkpoints are published in ``order``."""
    links, published = {}, []
    for i in order:
        published += CHECKPOINTS[i]
        for link in analogous_links(published, CHECKPOINTS[i][0].checkpoint_id, FEATURES):
            links[link["source"], link["target"]] = (link["similarity"], tuple(link["features"]))
    return links


def test_links_join_blocks_of_one_kind_in_different_models_above_the_threshold():
    links = published_in([0, 1, 2, 3])
    blocks = {b.block_id: b for c in CHECKPOINTS for b in c}
    assert links
    for (source, target), (value, features) in links.items():
        a, b = blocks[source], blocks[target]
        assert source < target and a.model_id != b.model_id and a.kind == b.kind
        assert abs(value - float(similarity(a.fingerprint, b.fingerprint)[0, 0])) < 1e-12
        if a.kind not in STRUCTURAL_KINDS:
            assert value >= MIN_SIMILARITY and features and not any(f.startswith("kind_") for f in features)


def test_the_unembeddings_of_two_models_are_linked_whatever_their_similarity():
    """The issue's case: the embeddings linked, the unembeddings, one role in every model, did not."""
    links = published_in([0, 1, 2, 3])
    unembeds = {(s, t): v for (s, t), v in links.items() if s.endswith("/unembed")}
    pairs = {(s.split("@")[0], t.split("@")[0]) for s, t in unembeds}
    assert pairs == {("a", "b"), ("a", "c"), ("b", "c")}
    a_b = unembeds["a@1/unembed", "b@1/unembed"]
    assert a_b[0] < MIN_SIMILARITY and a_b[1] == ("kind_unembed",)  # no shared feature: named by the kind
    assert unembeds["b@1/unembed", "c@1/unembed"][1] == ("importance",)


def test_each_block_keeps_at_most_top_k_links_of_its_own_choosing_per_other_checkpoint():
    """Every link is among the TOP_K best of one of its two ends in the other's checkpoint."""
    links = published_in([0, 1, 2, 3])
    blocks = {b.block_id: b for c in CHECKPOINTS for b in c}
    for source, target in links:
        chosen = False
        for me, other in ((source, target), (target, source)):
            peers = [
                b
                for b in blocks.values()
                if b.checkpoint_id == blocks[other].checkpoint_id and b.kind == blocks[me].kind
            ]
            ranked = sorted(peers, key=lambda b: -float(similarity(blocks[me].fingerprint, b.fingerprint)[0, 0]))
            chosen |= other in [b.block_id for b in ranked[:TOP_K]]
        assert chosen, (source, target)


def test_the_links_do_not_depend_on_the_publishing_order():
    orders = list(itertools.permutations(range(len(CHECKPOINTS))))
    first = published_in(list(orders[0]))
    assert all(published_in(list(order)) == first for order in orders[1:])
