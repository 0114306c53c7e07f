"""Every query file has a header whose parameters match the $tokens it uses, and no code path
formats user input into Cypher text."""

import re
from pathlib import Path

import pytest

from circuit_atlas import queries
from circuit_atlas.ingest.channels import KIND_LABELS

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


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_header_declares_exactly_the_parameters_used(name):
    query = LIBRARY[name]
    assert query.description and query.returns
    assert set(query.params) == query.used_params(), name


def test_a_file_without_a_full_header_is_refused():
    with pytest.raises(ValueError, match="lacks"):
        queries.parse("// name: x\nMATCH (n) RETURN n")


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
        *KIND_LABELS.values(),
    ]
    # Browser appends its own rule for a label lacking colour or caption, and that rule would win.
    for label in labels:
        assert {"color", "caption"} <= set(rules[f"node.{label}"]), label
    assert list(rules).index("node.Block") < min(list(rules).index(f"node.{k}") for k in KIND_LABELS.values())
    for kind in ("FEEDS", "FLOWS_ON", "ACTIVE_ON", "MATCHES"):
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
