import json

import pytest

from circuit_atlas.formatting import fixed, render

ROWS = [{"name": "L0H1", "weight": 0.123456, "roles": ["k", "v"]}, {"name": "L1H2", "weight": None, "roles": []}]


def test_table_aligns_columns_and_formats_cells():
    lines = render(ROWS).splitlines()
    assert lines[0].split() == ["name", "weight", "roles"]
    assert lines[2].split(None, 2) == ["L0H1", "0.1235", "[k, v]"]
    assert len(lines) == 4


def test_json_keeps_values():
    assert json.loads(render(ROWS, "json"))[0] == ROWS[0]


def test_csv_has_a_header_row_and_full_precision():
    assert render(ROWS, "csv").splitlines() == ["name,weight,roles", 'L0H1,0.123456,"[k, v]"', "L1H2,,[]"]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        render(ROWS, "xml")


def test_a_value_that_rounds_to_zero_prints_without_a_minus_sign():
    assert fixed(-0.001, 2) == "0.00" and fixed(-0.006, 2) == "-0.01" and fixed(0.941, 2) == "0.94"
    assert render([{"f": -0.0}, {"f": -0.00012}]).splitlines()[2:] == ["0", "-0.00012"]
