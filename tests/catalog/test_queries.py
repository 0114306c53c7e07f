"""Each query of the library against a hand-made catalog whose answers are known."""

import random
import shutil
import warnings
from collections import Counter

import hand_made_catalog
import pytest
import synthetic_artifacts
from click.testing import CliRunner

from circuit_atlas import queries
from circuit_atlas.cli import cli
from circuit_atlas.connection import Neo4jSettings, open_driver
from circuit_atlas.local_server import Distribution, LocalServer, ServerSettings, free_port
from circuit_atlas.schema.migrations import migrate

LIBRARY = queries.library()


def test_catalog_overview_lists_complete_checkpoints_only(catalog):
    rows = catalog("catalog_overview")
    assert [(r["checkpoint"], r["blocks"], r["edges"]) for r in rows] == [("m@1", 5, 4), ("m@2", 5, 0)]


def test_checkpoint_channels(catalog):
    rows = catalog("checkpoint_channels", checkpoint="m@1")
    assert [(r["channel"], r["order"]) for r in rows] == [(name, i) for i, name in enumerate("ABCDE")]
    assert rows[0]["ranks"] == ["k=2", "out=2", "q=2", "v=2"] and rows[3]["ranks"] == ["in=2", "out=2"]
    assert catalog("checkpoint_channels", checkpoint="m@3") == []  # still loading: invisible


@pytest.mark.parametrize(
    "by,expected",
    [("weight", ["A", "B", "D", "C"]), ("flow", ["A", "B", "D", "C"]), ("attribution", ["A", "B", "D", "C"])],
)
def test_top_edges(catalog, by, expected):
    rows = catalog("top_edges", checkpoint="m@1", by=by, limit=10)
    assert [r["writer"] for r in rows] == expected
    assert (rows[0]["reader"], rows[0]["role"], rows[0]["weight"]) == ("B", "k", 0.9)
    assert len(catalog("top_edges", checkpoint="m@1", by=by, limit=2)) == 2


def test_top_slice_edges(catalog):
    rows = catalog("top_slice_edges", checkpoint="m@1", slice="rnd", limit=2)
    assert [(r["writer"], r["reader"], r["attribution"]) for r in rows] == [("B", "C", 0.02), ("A", "B", 0.01)]


COMPONENT_VARIANTS = {"components": None, "components_apoc": "apoc.map.setPairs", "components_gds": "gds.wcc.stream"}


@pytest.fixture(params=COMPONENT_VARIANTS)
def components_variant(request, neo4j_driver, neo4j_settings):
    """A components query; the test server must have its plugin (the local runtime and Docker ship APOC and GDS)."""
    callable_name = COMPONENT_VARIANTS[request.param]
    if callable_name:
        found = [
            neo4j_driver.execute_query(
                f"SHOW {kind} YIELD name WHERE name = $name RETURN name",
                name=callable_name,
                database_=neo4j_settings.database,
            ).records
            for kind in ("PROCEDURES", "FUNCTIONS")
        ]
        if not any(found):
            pytest.fail(
                f"{callable_name} is not installed on this server: install the APOC and GDS plugins, or test "
                "against the local runtime (unset NEO4J_URI) or Docker, which have both."
            )
    return request.param


ALONE = [("D", 1, ["D"]), ("E", 1, ["E"])]


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"min_share": 0.5}, [("A", 3, ["A", "B", "C"]), *ALONE]),  # attribution by default: >= 0.15
        ({"by": "attribution", "min_share": 1.0}, [("A", 2, ["A", "B"]), ("C", 1, ["C"]), *ALONE]),
        ({"by": "weight", "min_share": 0.5}, [("A", 3, ["A", "B", "C"]), ("D", 2, ["D", "E"])]),
        ({"by": "flow", "min_share": 0.7}, [("A", 3, ["A", "B", "C"]), *ALONE]),
        ({"by": "weight", "min_share": 0.01}, [("A", 5, ["A", "B", "C", "D", "E"])]),
        # A slice's components: its circuit's channels, joined by the edges' attribution on it.
        ({"slice": "rep", "min_share": 0.1, "min_effect": 0.5}, [("A", 3, ["A", "B", "C"])]),
        ({"slice": "rep", "min_share": 0.1}, [("A", 3, ["A", "B", "C"]), ("D", 2, ["D", "E"])]),
        ({"slice": "rep", "min_share": 0.5}, [("A", 3, ["A", "B", "C"]), *ALONE]),
        (
            {"slice": "rep", "by": "weight", "min_share": 0.01, "min_effect": 0.01},
            [("A", 5, ["A", "B", "C", "D", "E"])],
        ),
        ({"slice": "rnd", "min_share": 0.1, "min_effect": 0.5}, [("C", 1, ["C"])]),
        ({"slice": "nowhere", "min_share": 0.1}, []),
    ],
)
def test_components(catalog, components_variant, params, expected):
    rows = catalog(components_variant, checkpoint="m@1", **params)
    assert [(r["component"], r["size"], r["channels"]) for r in rows] == expected


def test_components_of_an_unknown_or_loading_checkpoint_are_empty(catalog, components_variant):
    assert catalog(components_variant, checkpoint="m@9", min_share=0.5) == []
    assert catalog(components_variant, checkpoint="m@3", min_share=0.5) == []
    assert catalog(components_variant, checkpoint="m@9", slice="rep", min_share=0.5) == []


def breadth_first_components(names: list[str], edges: list[tuple[str, str, float]]) -> list:
    """Reference answer: (first member, size, members in catalog order), largest first, for the
    channels ``names`` joined by ``edges``."""
    neighbours = {name: set() for name in names}
    for a, b in edges:
        if a in neighbours and b in neighbours:
            neighbours[a].add(b)
            neighbours[b].add(a)
    label = {}
    for name in names:
        frontier = [name] if name not in label else []
        while frontier:
            node = frontier.pop()
            if node not in label:
                label[node] = name
                frontier.extend(neighbours[node])
    groups = [[n for n in names if label[n] == root] for root in dict.fromkeys(label.values())]
    return sorted(((g[0], len(g), g) for g in groups), key=lambda c: (-c[1], c[0]))


def test_components_of_a_random_channel_graph(migrated, neo4j_settings, components_variant, tmp_path):
    """60 channels, 70 random edges including self-loops, parallel edges (one pair's q, k and v roles)
    and long chains; on a slice, random effects and random attributions."""
    db = neo4j_settings.database
    rng = random.Random(7)
    names = [f"c{i:02d}" for i in range(60)]
    edges = [(rng.choice(names), rng.choice(names), round(rng.random(), 3)) for _ in range(70)]
    roles = [Counter((w, r) for w, r, _ in edges[:i])[(w, r)] for i, (w, r, _) in enumerate(edges)]
    assert max(roles) in (1, 2)  # some pair is drawn twice (an artifact has one edge per pair and role)
    effects = {name: round(rng.uniform(-0.5, 1.0), 3) for name in names}
    on_slice = {(w, r): round(rng.random(), 3) for w, r, _ in edges}
    channels = [synthetic_artifacts.SyntheticChannel(n, "attn_head", i, 0) for i, n in enumerate(names)]
    synthetic_artifacts.load(
        migrated,
        db,
        synthetic_artifacts.Checkpoint(
            "g",
            "1",
            1,
            channels,
            [synthetic_artifacts.Edge(w, r, "qkv"[i], wt, wt, wt) for (w, r, wt), i in zip(edges, roles)],
            effects={"s": effects},
            slice_attribution={"s": on_slice},
        ),
        tmp_path,
    )
    for min_share in (0.2, 0.5, 0.8):
        run = {"checkpoint": "g@1", "slice": None, "by": "weight", "min_share": min_share, "min_effect": None}
        rows = queries.run(migrated, db, LIBRARY[components_variant], run)
        cut = min_share * max(wt for _, _, wt in edges)
        expected = breadth_first_components(names, [(w, r) for w, r, wt in edges if wt >= cut])
        assert [(r["component"], r["size"], r["channels"]) for r in rows] == expected
        assert 1 < len(expected) < len(names)

        rows = queries.run(
            migrated, db, LIBRARY[components_variant], {**run, "slice": "s", "by": None, "min_effect": 0.3}
        )
        acting = [n for n in names if effects[n] >= 0.3]
        cut = min_share * max(on_slice.values())
        expected = breadth_first_components(acting, [pair for pair, a in on_slice.items() if a >= cut])
        assert [(r["component"], r["size"], r["channels"]) for r in rows] == expected
        assert any(size > 1 for _, size, _ in expected) and len(acting) < len(names)


def test_circuit_on_each_slice(catalog):
    rep = catalog("circuit", checkpoint="m@1", slice="rep", min_effect=0.5, min_attribution=0.1)
    assert [(r["writer"], r["reader"], r["role"]) for r in rep] == [("A", "B", "k"), ("B", "C", "v"), ("C", None, None)]
    rnd = catalog("circuit", checkpoint="m@1", slice="rnd", min_effect=0.5, min_attribution=0.1)
    assert [(r["writer"], r["reader"]) for r in rnd] == [("C", None)]


def test_circuit_faithfulness_is_the_curve_at_its_size(catalog):
    """The hand-made faithfulness of the channels up to a rank is their share of the summed effects."""
    curve = catalog("faithfulness_curve", checkpoint="m@1", slice="rep")
    assert [(r["rank"], r["channel"]) for r in curve] == list(enumerate("ABCED", 1))
    assert [r["faithfulness"] for r in curve] == pytest.approx([1.0 / 2.43, 1.8 / 2.43, 2.4 / 2.43, 2.42 / 2.43, 1.0])
    rep = catalog("circuit", checkpoint="m@1", slice="rep", min_effect=0.5, min_attribution=0.1)
    assert [r["faithfulness"] for r in rep] == pytest.approx([2.4 / 2.43] * 3)  # A, B, C: rank 3
    rep = catalog("circuit", checkpoint="m@1", slice="rep", min_effect=0.015, min_attribution=0.1)
    assert {r["writer"] for r in rep} == set("ABCE") and rep[0]["faithfulness"] == pytest.approx(2.42 / 2.43)


def test_channel_examples_are_its_strongest_tokens_over_the_slices(catalog):
    """Hand-made examples: ranks 1 and 2 of each slice with value -effect / rank (C: rep 0.6, rnd 0.5)."""
    rows = catalog("channel_examples", checkpoint="m@1", channel="C", ranking="effect", limit=3)
    assert [(r["slice"], r["rank"]) for r in rows] == [("rep", 1), ("rnd", 1), ("rep", 2)]
    assert [r["value"] for r in rows] == pytest.approx([-0.6, -0.5, -0.3])
    assert rows[0]["text"] == "a«C»b" and rows[0]["tokens"] == [1, 5, 6] and rows[0]["focus"] == 1
    assert catalog("channel_examples", checkpoint="m@1", channel="C", ranking="input", limit=3) == []


def test_circuit_graph_returns_nodes_and_paths(catalog):
    [row] = catalog("circuit_graph", checkpoint="m@1", slice="rep", min_effect=0.5, min_attribution=0.1)
    assert sorted(b["name"] for b in row["blocks"]) == ["A", "B", "C"]
    assert len(row["edges"]) == 2 and row["slice"]["name"] == "rep"


def test_circuit_view_grades_channel_edges_by_effect(catalog, empty_catalog, neo4j_settings):
    [row] = empty_catalog.execute_query(
        LIBRARY["circuit_view"].text,
        checkpoint="m@1",
        slice="rep",
        min_effect=0.5,
        min_attribution=0.01,
        database_=neo4j_settings.database,
    ).records
    assert sorted(b["name"] for b in row["blocks"]) == ["A", "B", "C"]
    carries = sorted((r.start_node["name"], r.type, r.end_node["name"], r["roles"], r["share"]) for r in row["carries"])
    # 0.25 is the strongest pair; 0.15 lies between a third and two thirds of it.
    assert carries == [
        ("A", "CARRIES_STRONG", "B", ["k"], 1.0),
        ("B", "CARRIES_MEDIUM", "C", ["v"], pytest.approx(0.6)),
    ]
    writes = sorted((p.start_node["name"], p.relationships[0].type, p.end_node["role"]) for p in row["writes"])
    assert writes == [("A", "HAS_SUBSPACE", "out"), ("B", "HAS_SUBSPACE", "out"), ("C", "HAS_SUBSPACE", "out")]


def test_channel_graph_grades_channel_edges_by_weight(catalog, empty_catalog, neo4j_settings):
    [row] = empty_catalog.execute_query(
        LIBRARY["channel_graph"].text, checkpoint="m@1", min_weight=0.01, database_=neo4j_settings.database
    ).records
    assert sorted(b["name"] for b in row["blocks"]) == ["A", "B", "C", "D", "E"]
    carries = sorted((r.start_node["name"], r.type, r.end_node["name"], r["weight"]) for r in row["carries"])
    # Against the top weight 0.9: 0.8 and 0.7 reach two thirds of it, 0.05 not a third.
    assert carries == [
        ("A", "CARRIES_STRONG", "B", 0.9),
        ("B", "CARRIES_STRONG", "C", 0.8),
        ("C", "CARRIES_WEAK", "D", 0.05),
        ("D", "CARRIES_STRONG", "E", 0.7),
    ]


def test_slice_contrast(catalog):
    rows = catalog("slice_contrast", checkpoint="m@1", slice_a="rep", slice_b="rnd", min_effect=0.5)
    assert [(r["channel"], r["effect_a"], r["effect_b"]) for r in rows] == [("A", 1.0, 0.02), ("B", 0.8, -0.1)]


def test_channel_timeline_follows_matches_over_complete_checkpoints(catalog):
    rows = catalog("channel_timeline", checkpoint="m@2", channel="A")
    assert [(r["checkpoint"], r["similarity_to_previous"]) for r in rows] == [("m@1", None), ("m@2", 0.9)]
    assert catalog("channel_timeline", checkpoint="m@1", channel="A") == rows


def test_no_query_takes_a_probe_from_a_checkpoint_that_is_not_complete(catalog):
    for checkpoint in ("m@3", "m@4"):  # loading (left by an older loader), and still staged
        assert catalog("similar_channels", checkpoint=checkpoint, channel="A", limit=3) == []
        assert catalog("channel_timeline", checkpoint=checkpoint, channel="A") == []
        assert catalog("checkpoint_channels", checkpoint=checkpoint) == []


def test_similar_channels_use_the_vector_index(catalog, neo4j_settings, empty_catalog):
    empty_catalog.execute_query("CALL db.awaitIndexes(60)", database_=neo4j_settings.database)
    rows = catalog("similar_channels", checkpoint="m@1", channel="A", limit=3)
    assert [(r["checkpoint"], r["channel"]) for r in rows][:2] == [("m@2", "A"), ("m@1", "C")]
    assert rows[0]["similarity"] == pytest.approx(1.0)


def test_user_values_are_parameters_not_cypher(catalog, migrated, neo4j_settings):
    """Past the type checks (``queries.run`` runs what it is given), text stays a value."""
    assert catalog("checkpoint_channels", checkpoint="m@1' OR 1=1 //") == []
    unchecked = {"checkpoint": "m@1", "by": "weight DESC //", "limit": 1}
    assert queries.run(migrated, neo4j_settings.database, LIBRARY["top_edges"], unchecked)[0]["writer"] == "A"


def test_query_cli_formats_and_errors(catalog, cli_env):
    runner = CliRunner()
    listed = runner.invoke(cli, ["query", "--list"], env=cli_env)
    assert listed.exit_code == 0 and all(name in listed.output for name in LIBRARY)
    csv = runner.invoke(
        cli,
        ["query", "top_edges", "-p", "checkpoint=m@1", "-p", "by=weight", "-p", "limit=1", "--format", "csv"],
        env=cli_env,
    )
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines()[:2] == [
        "writer,reader,role,weight,flow,attribution,patched,strength,writer_kind,reader_kind",
        "A,B,k,0.9,0.5,0.3,,0.9,attn_head,attn_head",
    ]
    missing = runner.invoke(cli, ["query", "top_edges", "-p", "checkpoint=m@1"], env=cli_env)
    assert missing.exit_code == 1 and "-p by=..." in missing.output
    unknown = runner.invoke(cli, ["query", "no_such_query"], env=cli_env)
    assert unknown.exit_code == 1 and "--list" in unknown.output


def test_queries_run_read_only(catalog, neo4j_driver, neo4j_settings):
    import neo4j

    from circuit_atlas.errors import UserError

    writer = queries.Query("w", "writes", "nothing", (), "CREATE (:Model {id: 'intruder'})")
    with pytest.raises(UserError, match="failed"):
        queries.run(neo4j_driver, neo4j_settings.database, writer, {})
    assert (
        neo4j_driver.execute_query(
            "MATCH (m:Model {id: 'intruder'}) RETURN count(m) AS n",
            database_=neo4j_settings.database,
            routing_=neo4j.RoutingControl.READ,
        ).records[0]["n"]
        == 0
    )


def test_similar_channels_return_limit_neighbours_past_many_loading_blocks(migrated, neo4j_settings, tmp_path):
    """40 blocks of a checkpoint still loading carry the probe's very fingerprint: the vector index
    ranks them first, yet the query still returns $limit neighbours from complete checkpoints."""
    db = neo4j_settings.database
    SyntheticChannel, Checkpoint = synthetic_artifacts.SyntheticChannel, synthetic_artifacts.Checkpoint
    complete = [SyntheticChannel(f"c{i}", "attn_head", i, 0, (1.0, 0.1 * i, 0.0)) for i in range(6)]
    twins = [SyntheticChannel(f"x{i}", "attn_head", i, 0, (1.0, 0.0, 0.0)) for i in range(40)]
    synthetic_artifacts.load(migrated, db, Checkpoint("m", "1", 1, complete), tmp_path)
    synthetic_artifacts.load(migrated, db, Checkpoint("m", "2", 2, twins), tmp_path, complete=False)
    migrated.execute_query("CALL db.awaitIndexes(60)", database_=db)
    rows = queries.run(migrated, db, LIBRARY["similar_channels"], {"checkpoint": "m@1", "channel": "c0", "limit": 3})
    assert [(r["checkpoint"], r["channel"]) for r in rows] == [("m@1", "c1"), ("m@1", "c2"), ("m@1", "c3")]


def test_circuit_edges_are_judged_by_patched_effect_where_it_was_measured(migrated, neo4j_settings, tmp_path):
    """A -> B carries 0.5 nats when patched though its first-order attribution is 0.001 (saturated
    attention); B -> C has attribution 0.3 but patched 0.001; C -> D was not patched. At 0.02 nats
    the circuit keeps A -> B and C -> D, not B -> C, and returns both scores of each edge."""
    db = neo4j_settings.database
    channels = [synthetic_artifacts.SyntheticChannel(n, "attn_head", i, 0) for i, n in enumerate("ABCD")]
    edges = [
        synthetic_artifacts.Edge("A", "B", "k", 0.5, 0.5, 0.001, patched=0.5),
        synthetic_artifacts.Edge("B", "C", "v", 0.5, 0.5, 0.3, patched=0.001),
        synthetic_artifacts.Edge("C", "D", "q", 0.5, 0.5, 0.05),
    ]
    synthetic_artifacts.load(
        migrated,
        db,
        synthetic_artifacts.Checkpoint(
            "p",
            "1",
            1,
            channels,
            edges,
            effects={"s": {n: 1.0 for n in "ABCD"}},
            slice_attribution={"s": {(e.writer, e.reader): e.attribution for e in edges}},
        ),
        tmp_path,
    )
    params = {"checkpoint": "p@1", "slice": "s", "min_effect": 0.1, "min_attribution": 0.02}
    rows = queries.run(migrated, db, LIBRARY["circuit"], params)
    kept = {(r["writer"], r["reader"], r["attribution"], r["patched"]) for r in rows if r["reader"]}
    assert kept == {("A", "B", 0.001, 0.5), ("C", "D", 0.05, None)}
    [graph] = migrated.execute_query(LIBRARY["circuit_graph"].text, params, database_=db).records
    drawn = {(p.start_node["id"].split("/")[1], p.end_node["id"].split("/")[1]) for p in graph["edges"]}
    assert drawn == {("A", "B"), ("C", "D")}
    by_patched = queries.run(migrated, db, LIBRARY["top_edges"], {"checkpoint": "p@1", "by": "patched", "limit": 10})
    assert [(r["writer"], r["patched"]) for r in by_patched] == [("A", 0.5), ("B", 0.001)]  # C -> D: not measured


def test_faithful_circuit_returns_the_stored_circuit_with_its_faithfulness(catalog):
    """The hand-made catalog's synthetic circuit on rep: A, B and C hold 2.4 of the 2.43 nats of
    summed effect, the first prefix past the 0.9 target."""
    [row] = catalog("faithful_circuit", checkpoint="m@1", slice="rep")
    assert (row["channels"], row["effects"], row["size"]) == (["A", "B", "C"], [1.0, 0.8, 0.6], 3)
    assert row["faithfulness"] == pytest.approx(2.4 / 2.43) and row["target"] == 0.9 and row["reason"] is None
    assert catalog("faithful_circuit", checkpoint="m@1", slice="no-such-slice") == []


def test_reads_on_a_server_without_apoc_run_unlocked_and_say_so_once(catalog, tmp_path, tmp_path_factory):
    """A second real server, started from the same jars with no plugin (so no APOC core and no
    apoc.lock), holding the same hand-made catalog: the query answers as on the session's server,
    with one warning per driver that its reads are not isolated from reloads."""
    expected = catalog("top_edges", checkpoint="m@1", by="weight", limit=3)
    installed = Distribution.in_cache()
    bare = Distribution(tmp_path / f"neo4j-{installed.version}")
    (bare.root / "plugins").mkdir(parents=True)
    (bare.root / "lib").symlink_to(installed.lib)
    shutil.copy(installed.marker, bare.marker)
    server = LocalServer(tmp_path / "server", bare)
    settings = server.start(
        ServerSettings(free_port(), free_port(), heap="512m", pagecache="128m"), echo=lambda _: None
    )
    try:
        with open_driver(Neo4jSettings(settings.bolt_uri, "neo4j", server.password())) as driver:
            migrate(driver, "neo4j")
            hand_made_catalog.build(driver, "neo4j", tmp_path_factory.mktemp("hand-made"))
            top_edges = queries.library()["top_edges"]
            params = top_edges.check({"checkpoint": "m@1", "by": "weight", "limit": 3})
            with pytest.warns(UserWarning, match="no APOC core"):
                assert queries.run(driver, "neo4j", top_edges, params) == expected != []
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert queries.run(driver, "neo4j", top_edges, params) == expected
    finally:
        server.stop()
