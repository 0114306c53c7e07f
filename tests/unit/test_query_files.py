"""Every query file has a header whose parameters match the $tokens it uses, and no code path
formats user input into Cypher text."""

import re
from pathlib import Path

import pytest

from circuit_atlas import queries

LIBRARY = queries.library()
REPO = Path(__file__).resolve().parents[2]


def test_the_library_has_the_queries_the_docs_promise():
    assert {"catalog_overview", "checkpoint_channels", "top_edges", "top_slice_edges", "components",
            "components_gds", "circuit", "circuit_graph", "slice_contrast", "channel_timeline",
            "similar_channels"} <= set(LIBRARY)


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
    offenders = [str(p.relative_to(REPO)) for folder in ("ingest", "queries", "schema")
                 for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
