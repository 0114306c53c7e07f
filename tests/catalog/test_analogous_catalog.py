"""Across models, against the real Neo4j: ANALOGOUS links between separately trained induction models,
the reference circuit found in the others, and MATCHES between any two checkpoints of a model.

Ground truth is each model's own attention on fresh probes (``head_scores.json``)."""

import pytest
from empty_database import empty_database

from circuit_atlas import queries
from circuit_atlas.analogous import TOP_K
from circuit_atlas.loader import load_artifact
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.seeds import PARTIAL_ATTENTION, final_checkpoints, mechanisms
from circuit_atlas.schema.migrations import migrate

LIBRARY = queries.library()
MIN_EFFECT = 0.1  # nats, as the reference circuit tests


@pytest.fixture(scope="module")
def catalog(variant_artifacts, neo4j_driver, neo4j_settings):
    """Every variant artifact loaded, the reference model's checkpoints first in step order."""
    db = neo4j_settings.database
    empty_database(neo4j_driver, db)
    migrate(neo4j_driver, db)
    for paths in variant_artifacts.values():
        for path in paths:
            load_artifact(neo4j_driver, db, path, echo=lambda _: None)

    def run(name, **params):
        return queries.run(neo4j_driver, db, LIBRARY[name], params)

    def cypher(text, **params):
        return [r.data() for r in neo4j_driver.execute_query(text, params, database_=db).records]

    return run, cypher


@pytest.fixture(scope="module")
def truth():
    """Mechanism per head name, by the final checkpoint id of each variant."""
    return {
        f"{name}@{path.name}": mechanisms(path) for name, path in final_checkpoints(default_reference_dir()).items()
    }


@pytest.fixture(scope="module")
def partial_truth():
    """The same, with the heads that do a mechanism in part (a link to them finds it)."""
    return {
        f"{name}@{path.name}": mechanisms(path, PARTIAL_ATTENTION)
        for name, path in final_checkpoints(default_reference_dir()).items()
    }


ANALOGOUS = """
MATCH (:Checkpoint {id: $a})-[:HAS_BLOCK]->(x:Block)-[l:ANALOGOUS]-(y:Block)<-[:HAS_BLOCK]-(:Checkpoint {id: $b})
RETURN x.name AS x, y.name AS y, l.similarity AS similarity, l.features AS features
"""


def test_heads_of_one_mechanism_are_analogous_across_models_and_no_head_of_another(catalog, truth, partial_truth):
    _, cypher = catalog
    for a, b in (pair for pair in [(a, b) for a in truth for b in truth] if pair[0] < pair[1]):
        links = cypher(ANALOGOUS, a=a, b=b)
        for mechanism in ("previous_token", "induction"):
            heads = [h for h, m in truth[a].items() if m == mechanism]
            best = {
                h: max((r for r in links if r["x"] == h), key=lambda r: r["similarity"], default=None) for h in heads
            }
            for head, link in best.items():
                assert link and partial_truth[b].get(link["y"]) == mechanism, (a, head, b, link)
                assert link["features"][0] == f"lift_{mechanism}", link
        crossed = [r for r in links if {truth[a].get(r["x"]), truth[b].get(r["y"])} == {"previous_token", "induction"}]
        assert not crossed, (a, b, crossed)


def test_links_are_bounded_and_join_checkpoints_of_different_models_only(catalog):
    _, cypher = catalog
    rows = cypher(
        "MATCH (x:Block)-[:ANALOGOUS]-(y:Block) "
        "RETURN x.model_id = y.model_id AS same_model, x.kind = y.kind AS same_kind, "
        "x.id AS x, y.checkpoint_id AS other, count(*) AS n"
    )
    assert rows and not any(r["same_model"] or not r["same_kind"] for r in rows)
    # A block's own choices are at most TOP_K per other checkpoint; the others' choices of it add to them.
    blocks_per_checkpoint = {
        r["c"]: r["n"] for r in cypher("MATCH (c:Checkpoint)-[:HAS_BLOCK]->(b) RETURN c.id AS c, count(b) AS n")
    }
    assert all(r["n"] <= TOP_K + blocks_per_checkpoint[r["other"]] for r in rows)


def test_reloading_a_checkpoint_gives_the_same_links(catalog, variant_artifacts, neo4j_driver, neo4j_settings):
    _, cypher = catalog
    everything = (
        "MATCH (x:Block)-[l:ANALOGOUS]->(y:Block) "
        "RETURN x.id AS x, y.id AS y, l.similarity AS s, l.features AS f ORDER BY x, y"
    )
    before = cypher(everything)
    load_artifact(neo4j_driver, neo4j_settings.database, variant_artifacts["induction-s1"][-1], echo=lambda _: None)
    assert cypher(everything) == before


def test_the_reference_circuit_is_found_in_the_other_models(catalog, truth, partial_truth):
    run, _ = catalog
    source = next(c for c in truth if c.startswith("induction-s0@"))
    rows = run("analogous_circuit", checkpoint=source, slice="repeated", min_effect=MIN_EFFECT)
    members = {
        r["writer"]
        for r in run("circuit", checkpoint=source, slice="repeated", min_effect=MIN_EFFECT, min_attribution=0.0)
    }
    elsewhere = {r["checkpoint"] for r in rows}
    assert elsewhere == set(truth) - {source}
    for checkpoint in elsewhere:
        mine = [r for r in rows if r["checkpoint"] == checkpoint]
        assert {r["channel"] for r in mine} == members and all(r["same_data"] for r in mine)
        for r in mine:
            mechanism = truth[source].get(r["channel"])
            if mechanism:
                assert partial_truth[checkpoint].get(r["analogue"]) == mechanism and r["in_circuit"], r
        share = sum(r["in_circuit"] for r in mine) / len(mine)
        assert all(r["share_in_circuit"] == pytest.approx(share) for r in mine)


def test_matches_between_any_two_checkpoints_compose_the_neighbours_matches(catalog, variant_artifacts):
    run, cypher = catalog
    ids = [f"induction-s0@{p.name.split('__')[1]}" for p in variant_artifacts["induction-s0"]]
    assert len(ids) >= 4
    neighbour = {
        (r["c"], r["name"]): r["s"]
        for r in cypher(
            "MATCH (:Block)-[m:MATCHES]->(b:Block) RETURN b.checkpoint_id AS c, b.name AS name, m.similarity AS s"
        )
    }
    first, last = ids[0], ids[-1]
    rows = run("matches_between", **{"from": last, "to": first})  # either order
    assert rows and [r["channel"] for r in rows] == [r["channel"] for r in run("checkpoint_channels", checkpoint=last)]
    for r in rows:
        chain = [neighbour.get((c, r["channel"])) for c in ids[1:]]
        assert r["matched"] == all(s is not None for s in chain)
        if r["matched"]:
            assert r["weakest_similarity"] == pytest.approx(min(chain))
        start = len(ids) - 1
        while start > 0 and neighbour.get((ids[start], r["channel"])) is not None:
            start -= 1
        assert r["first_appears"] == ids[start] and 0 < r["fingerprint_similarity"] <= 1
