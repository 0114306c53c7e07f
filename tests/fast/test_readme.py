"""The README's bad-input table lists exactly the cases the catalog tier runs, with their messages."""

from pathlib import Path

from bad_inputs import CASES

README = Path(__file__).resolve().parents[2] / "README.md"


def bad_input_rows() -> dict[str, str]:
    section = README.read_text().split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            name, _, message = (cell.strip() for cell in line.strip("|").split(" | ", 2))
            rows[name.strip("`")] = message.replace("&#124;", "|")
    return rows


def test_the_readme_table_lists_every_bad_input_with_its_message():
    rows = bad_input_rows()
    assert sorted(rows) == sorted(CASES)
    assert len(rows) >= 20
    for name, case in CASES.items():
        assert case.message in rows[name], name
