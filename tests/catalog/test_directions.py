"""What each write direction does, in the catalog: the steering ``ingest --steer`` measured, loaded as
``(:Subspace)-[:STEERED_ON]->(:DataSlice)``, and the ``directions`` query and command beside each
direction's direct output tokens."""

from builders import ONE_TOKEN
from click.testing import CliRunner

from circuit_atlas.api import Catalog
from circuit_atlas.cli import cli
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.loader import load_artifact


def test_the_directions_query_shows_each_directions_tokens_and_its_measured_steering(
    one_token_writer, migrated, neo4j_settings, cli_env
):
    """Every row of the artifact's steering table is one STEERED_ON with its figures; the head's one
    direction promotes the written token directly on the side the basis points to; the command prints
    the rows, the largest loss change first."""
    path, direction = one_token_writer
    opened = read_artifact(path)
    load_artifact(migrated, neo4j_settings.database, path, echo=lambda _: None)
    checkpoint = f"{opened.manifest['model']['name']}@{opened.manifest['checkpoint']['label']}"
    with Catalog(neo4j_settings) as catalog:
        rows = catalog.directions(checkpoint, "random")
        unmeasured = catalog.directions(checkpoint, "no-such-slice")
    stored = opened.tables["steering"].set_index(["block", "direction", "push"])
    measured = rows.dropna(subset=["push"]).set_index(["channel", "direction", "push"])
    assert len(measured) == len(stored) == len(rows)
    for column in ("loss_delta", "loss_se", "kl", "flipped"):
        assert (measured[column] - stored.loc[measured.index, column]).abs().max() < 1e-12, column
    assert list(rows["loss_delta"].abs()) == sorted(rows["loss_delta"].abs(), reverse=True)
    head = rows[rows["channel"] == "L0H0"].iloc[0]
    toward = float(opened.bases()["L0H0/out"][:, 0] @ direction) > 0
    assert (head["promotes"] if toward else head["suppresses"])[0] == str(ONE_TOKEN)  # no tokenizer: the id
    assert len(unmeasured) == len(stored) // 2 and unmeasured["push"].isna().all()  # once each, tokens still listed

    printed = CliRunner().invoke(cli, ["directions", checkpoint, "--data", "random", "--channel", "L0H0"], env=cli_env)
    assert printed.exit_code == 0, printed.output
    assert "flipped" in printed.output and printed.output.count("L0H0") == 2
