"""Tests, benchmarks and the notebook example use the package through its public names only: no
``_private`` name of a ``circuit_atlas`` module is imported or reached as a module attribute. The one
exception is the fault-injection harness that slows the loader's private writer down so a test can
kill a load half way (``tests/slow_loader.py``)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAULT_INJECTION = {"tests/slow_loader.py"}


def private_uses(path: Path) -> list[str]:
    """``line: name`` of each private name of a circuit_atlas module that ``path`` imports or reaches."""
    tree = ast.parse(path.read_text())
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("circuit_atlas"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.lineno}: {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("circuit_atlas")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_tests_benchmarks_and_examples_use_public_names_only():
    files = [p for folder in ("tests", "benchmarks", "docs") for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 50
    uses = {str(p.relative_to(REPO)): private_uses(p) for p in files}
    assert {name for name, found in uses.items() if found} == FAULT_INJECTION, uses


def test_a_private_import_or_attribute_is_found(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "from circuit_atlas.ingest.artifact import _sha256\nfrom circuit_atlas import loader\nloader._Writer\n"
    )
    assert private_uses(script) == ["1: circuit_atlas.ingest.artifact._sha256", "3: loader._Writer"]


def test_benchmarks_reach_the_package_through_the_api_not_the_cli():
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        imported = {
            name
            for node in ast.walk(ast.parse(path.read_text()))
            for name in (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in getattr(node, "names", [])]
            )
            if isinstance(node, (ast.Import, ast.ImportFrom))
        }
        assert "circuit_atlas.cli" not in imported, path.name
