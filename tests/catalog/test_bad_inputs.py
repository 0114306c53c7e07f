"""Every bad input of the README's table (``tests/bad_inputs.py``), run through the CLI against the
real server: a non-zero exit, one line saying what was wrong, no traceback, and nothing written:
neither the catalog nor any file changes."""

import pytest
from bad_inputs import CASES
from builders import random_gpt2
from click.testing import CliRunner
from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from snapshots import graph_snapshot
from synthetic_artifacts import Checkpoint, write

from circuit_atlas.cli import cli
from circuit_atlas.loader import load_artifact


def files_under(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_input_is_one_clear_line_and_writes_nothing(name, migrated, neo4j_settings, cli_env, tmp_path):
    case, db = CASES[name], neo4j_settings.database
    artifact = write(Checkpoint("m", "1", 1, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION), tmp_path / "artifacts")
    load_artifact(migrated, db, artifact, echo=lambda _: None)
    artifact = artifact.rename(tmp_path / "artifact")
    if any("{model}" in arg for arg in case.args):
        random_gpt2(tmp_path / "model")
    if case.prepare:
        case.prepare(tmp_path, migrated, db)
    catalog_before, files_before = graph_snapshot(migrated, db), files_under(tmp_path)
    args = [a.format(tmp=tmp_path, model=tmp_path / "model", artifact=artifact) for a in case.args]

    result = CliRunner().invoke(cli, args, env=cli_env)

    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert case.message in lines[0], result.output
    assert graph_snapshot(migrated, db) == catalog_before
    assert files_under(tmp_path) == files_before
