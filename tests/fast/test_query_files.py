"""Every query file has a header whose parameters match the $tokens it uses, and no code path
formats user input into Cypher text."""

import re
from pathlib import Path

import numpy as np
import pytest

from circuit_atlas import queries
from circuit_atlas.errors import UserError
from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.queries import rules

LIBRARY = queries.library()
REPO = Path(__file__).resolve().parents[2]


def test_the_library_has_the_queries_the_docs_promise():
    assert {
        "catalog_overview",
        "checkpoint_channels",
        "top_edges",
        "top_slice_edges",
        "components",
        "components_apoc",
        "components_gds",
        "circuit",
        "circuit_graph",
        "circuit_view",
        "channel_graph",
        "slice_contrast",
        "channel_timeline",
        "similar_channels",
    } <= set(LIBRARY)


STATEMENTS = queries.load_statements()
EVERY_FILE = {**{f"load/{k}": v for k, v in STATEMENTS.items()}, **LIBRARY}


@pytest.mark.parametrize("name", sorted(EVERY_FILE))
def test_header_declares_exactly_the_parameters_used_each_with_a_type(name):
    query = EVERY_FILE[name]
    assert query.description and query.returns
    assert set(query.params) == query.used_params(), name
    assert [p.name for p in query.types] == list(query.params), "every parameter declares a type"


def test_a_file_without_a_full_header_is_refused():
    with pytest.raises(ValueError, match="lacks"):
        queries.parse("// name: x\nMATCH (n) RETURN n")


def test_a_parameter_without_a_type_or_with_an_unknown_one_is_refused():
    header = "// name: x\n// description: d\n// returns: n\n// params: {}\nRETURN $a"
    with pytest.raises(ValueError, match="without a type"):
        queries.parse(header.format("$a"))
    with pytest.raises(ValueError, match="unknown type"):
        queries.parse(header.format("$a (number)"))
    with pytest.raises(ValueError, match="only numbers take a range"):
        queries.parse(header.format("$a (string >= 1)"))


PARAMETER_CASES = [  # declaration, accepted values, refused values
    ("integer >= 1", [1, 10**18, np.int64(3)], [0, -1, 1.5, "3", True, 2**63, None]),
    ("integer in [1, 100000]", [1, 100000], [0, 100001]),
    ("float", [0, -2.5, np.float32(1.0)], ["abc", float("nan"), float("inf"), True, None]),
    ("float in [0, 1]", [0, 0.5, 1], [-0.1, 1.1]),
    ("float >= 0", [0, 3.0], [-1e-9]),
    ("string", ["m@1", ""], [1, None, ["m"]]),
    ("string or null", ["m", None], [3]),
    ("'weight' | 'flow' | 'attribution'", ["weight", "flow"], ["nonsense", "Weight", None]),
]


@pytest.mark.parametrize("spec,good,bad", PARAMETER_CASES, ids=[c[0] for c in PARAMETER_CASES])
def test_declared_types_accept_and_refuse(spec, good, bad):
    param = queries.Param.parse("p", spec)
    for value in good:
        assert param.check(value)[1], (spec, value)
    for value in bad:
        assert not param.check(value)[1], (spec, value)


@pytest.mark.parametrize(
    "name,texts,message",
    [
        ("top_edges", {"checkpoint": "m@1", "by": "nonsense", "limit": "5"}, r"\$by must be one of 'weight'"),
        (
            "top_edges",
            {"checkpoint": "m@1", "by": "flow", "limit": "99999999999999999999"},
            r"\$limit must be an integer >= 1",
        ),
        ("top_edges", {"checkpoint": "m@1", "by": "flow", "limit": "0"}, r"\$limit must be an integer >= 1"),
        ("components", {"checkpoint": "m@1", "min_share": "abc"}, r"\$min_share must be a finite number in \[0, 1\]"),
        (
            "components",
            {"checkpoint": "m@1", "min_share": "0.2", "by": "strength"},
            r"\$by must be one of .weight., .flow., .attribution., .patched. or null",
        ),
        ("circuit", {"checkpoint": "m", "slice": "s", "min_effect": "abc", "min_attribution": "0"}, r"\$min_effect"),
        ("checkpoints", {"model": "m", "limit": "3"}, r"has no parameter \$limit"),
        ("slices", {}, None),
    ],
)
def test_command_line_texts_are_read_by_their_declared_type(name, texts, message):
    query = LIBRARY[name]
    if message is None:
        assert query.check(query.from_text(texts)) == {"checkpoint": None}
        return
    with pytest.raises(UserError, match=message):
        query.check(query.from_text(texts))


def test_texts_become_the_declared_types():
    query = LIBRARY["top_edges"]
    assert query.check(query.from_text({"checkpoint": "123", "by": "flow", "limit": "7"})) == {
        "checkpoint": "123",
        "by": "flow",
        "limit": 7,
    }


def test_no_code_formats_text_into_cypher():
    """Cypher run from the package is fixed text; values go in as parameters."""
    pattern = re.compile(r"\.(run|execute_query)\(\s*f[\"']")
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("ingest", "queries", "schema")
        for p in (REPO / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def stylesheet_rules() -> dict[str, dict[str, str]]:
    """The GraSS file as {selector: {property: value}} (one property per line, rules end at "}")."""
    rules, current = {}, None
    for line in queries.stylesheet().splitlines():
        if line.endswith("{"):
            current = rules.setdefault(line[:-1].strip(), {})
        elif line.strip() == "}":
            current = None
        elif line.strip():
            key, _, value = line.strip().rstrip(";").partition(":")
            current[key.strip()] = value.strip()
    return rules


def test_the_stylesheet_styles_every_label_and_type_of_the_catalog():
    rules = stylesheet_rules()
    labels = [
        "Model",
        "Checkpoint",
        "Block",
        "Subspace",
        "DataSlice",
        "IngestRun",
        "SchemaMigration",
        "Intervention",
        *KIND_LABELS.values(),
    ]
    # Browser appends its own rule for a label lacking colour or caption, and that rule would win.
    for label in labels:
        assert {"color", "caption"} <= set(rules[f"node.{label}"]), label
    assert list(rules).index("node.Block") < min(list(rules).index(f"node.{k}") for k in KIND_LABELS.values())
    for kind in ("FEEDS", "FLOWS_ON", "ACTIVE_ON", "MATCHES", "ON", "MEASURED_ON", "STEERED_ON"):
        assert "caption" in rules[f"relationship.{kind}"], kind
    widths = [
        float(rules[f"relationship.CARRIES_{grade}"]["shaft-width"].removesuffix("px"))
        for grade in ("STRONG", "MEDIUM", "WEAK")
    ]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3
    for view in ("circuit_view", "channel_graph"):
        assert all(f"'CARRIES_{grade}'" in LIBRARY[view].body for grade in ("STRONG", "MEDIUM", "WEAK")), view


def test_the_style_command_is_one_line_to_paste():
    command = queries.style_command()
    assert command.startswith(":style node {") and "\n" not in command


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_bodies_have_no_comments_so_they_paste_as_one_line(name):
    assert "//" not in LIBRARY[name].body


def test_a_declared_default_is_what_a_parameter_not_given_takes():
    circuit = queries.library()["circuit"]
    assert circuit.check({"checkpoint": "m@1", "slice": "s"}) == {
        "checkpoint": "m@1",
        "slice": "s",
        "min_effect": 0.1,
        "min_attribution": 0.02,
    }
    assert circuit.check({"checkpoint": "m@1", "slice": "s", "min_attribution": 0.5})["min_attribution"] == 0.5
    assert "$min_attribution (a finite number >= 0, default 0.02)" in circuit.signature()
    with pytest.raises(ValueError, match="default -1 is not a finite number >= 0"):
        queries.Param.parse("x", "float >= 0, default -1")


@pytest.mark.parametrize("rule", sorted(rules.RULES))
def test_every_query_applies_a_shared_rule_in_its_one_written_form(rule):
    """The rules of ``queries/rules.py``: each applied by several queries, always as written there."""
    applied = {name for name, query in LIBRARY.items() if re.search(rules.RULES[rule].finder, query.body)}
    assert len(applied) >= 3, applied
    misused = {name: rules.RULES[rule].misuses(LIBRARY[name].text) for name in applied}
    assert not any(misused.values()), misused


@pytest.mark.parametrize(
    ("rule", "drifted"),
    [
        ("circuit member", "WHERE a.ablation > $min_effect"),
        ("circuit member", "WHERE $min_effect <= a.ablation"),
        ("circuit member", "WHERE a.attribution >= $min_effect"),
        ("circuit member", "WHERE a.ablation >= coalesce($min_effect, 0)"),
        ("edge effect", "ORDER BY coalesce(f.attribution, f.patched)"),
        ("edge effect", "WHERE coalesce(f.patched, g.attribution) >= $min_attribution"),
        ("least share", "RETURN $min_share * max(f.attribution) AS least_score"),
    ],
)
def test_a_rule_written_another_way_is_found(rule, drifted):
    assert rules.RULES[rule].misuses(drifted)
