"""The catalog across a training run against truth it did not compute (issue 32): the modular-addition
series (reference/modular_addition.py), in which the model memorises its training pairs first and
forms the known algorithm later.

The truth is measured here on the checkpoints' weights with plain PyTorch
(:func:`~circuit_atlas.reference.modular_addition.progress_measures`): training and held-out loss,
the MLP's mean-ablation effect on the held-out pairs, and the embedding's energy share on the
final checkpoint's key Fourier frequencies (Nanda et al.'s progress measure).
"""

import math

import pandas as pd
import pytest
from empty_database import empty_database

from circuit_atlas import queries
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.loader import load_artifact
from circuit_atlas.reference.attention_only import NATIVE_CONFIG
from circuit_atlas.reference.modular_addition import ModularAdditionRecipe, progress_measures, write_slices
from circuit_atlas.schema.migrations import migrate

LIBRARY = queries.library()
RECIPE = ModularAdditionRecipe()
CHANCE = math.log(RECIPE.p)


@pytest.fixture(scope="module")
def truth(modular_addition_checkpoints):
    """Per checkpoint label, the plain-PyTorch progress measures, and the phases they define:
    ``memorised`` (training loss under 0.1 while the held-out loss is above chance, log p) and
    ``settled`` (from the first checkpoint whose key-frequency share is within 0.1 of the final one)."""
    measured = progress_measures(modular_addition_checkpoints, RECIPE)["checkpoints"]
    labels = list(measured)
    final_share = measured[labels[-1]]["key_share"]
    memorised = [
        label for label in labels if measured[label]["train_loss"] < 0.1 and measured[label]["held_out_loss"] > CHANCE
    ]
    settled = next(i for i, label in enumerate(labels) if measured[label]["key_share"] >= final_share - 0.1)
    assert memorised and labels.index(memorised[-1]) < settled < len(labels) - 1  # the run has both phases
    return {"measured": measured, "labels": labels, "memorised": memorised, "settled": labels[settled:]}


@pytest.fixture(scope="module")
def loaded(modular_addition_checkpoints, neo4j_driver, neo4j_settings, tmp_path_factory):
    """Every checkpoint ingested on the training and the held-out pairs (the series rank rule: the last
    checkpoint's searched fraction) and loaded, in step order; returns a query runner and the ids."""
    db = neo4j_settings.database
    empty_database(neo4j_driver, db)
    migrate(neo4j_driver, db)
    data = write_slices(tmp_path_factory.mktemp("pairs"), RECIPE)
    paths = ingest(
        str(modular_addition_checkpoints[0].parent / NATIVE_CONFIG),
        [str(c) for c in modular_addition_checkpoints],
        data,
        tmp_path_factory.mktemp("series"),
        IngestConfig(),
        "cpu",
        progress=False,
        echo=lambda _: None,
    )
    ids = [load_artifact(neo4j_driver, db, path, echo=lambda _: None).checkpoint_id for path in paths]
    return lambda name, **params: queries.run(neo4j_driver, db, LIBRARY[name], params), ids


def timeline(loaded, channel: str, slice_name: str) -> dict[str, dict]:
    """The timeline query's rows of ``channel`` on ``slice_name``, by checkpoint label."""
    run, ids = loaded
    rows = run("timeline", model=ids[-1].split("@")[0], channel=channel)
    return {r["checkpoint"].split("@")[1]: r for r in rows if r["slice"] == slice_name}


def test_the_mlp_effect_rises_while_the_held_out_loss_is_still_above_chance(loaded, truth):
    """The MLP's exact ablation effect on the held-out pairs is several standard errors above zero at a
    checkpoint where the plain-PyTorch held-out loss is still above chance, and over the trained
    checkpoints it ranks them as the plain-PyTorch mean-ablation effect does."""
    rows, measured = timeline(loaded, "L0.mlp", "held-out"), truth["measured"]
    early = [label for label in truth["memorised"] if rows[label]["effect"] > 3 * rows[label]["effect_se"]]
    assert early, {label: (rows[label]["effect"], rows[label]["effect_se"]) for label in truth["memorised"]}
    assert measured[early[0]]["held_out_loss"] > CHANCE
    trained = truth["labels"][1:]
    catalog = pd.Series([rows[label]["effect"] for label in trained])
    rho = catalog.corr(pd.Series([measured[label]["mlp_effect"] for label in trained]), method="spearman")
    assert rho >= 0.9, rho


def test_the_embedding_lineage_breaks_where_its_representation_changed_and_not_after(loaded, truth):
    """The embedding's lineage starts anew at the first trained checkpoint (it left its random
    initialisation); no lineage holds both a memorisation checkpoint and the last one (the truth's key
    frequency share goes from under half to its final value between them); and from the checkpoint
    where the truth's share has settled to the last, one lineage runs unbroken."""
    rows, labels = timeline(loaded, "embed", "held-out"), truth["labels"]
    assert rows[labels[1]]["lineage_start"] == labels[1]
    assert all(truth["measured"][label]["key_share"] < 0.5 for label in truth["memorised"])
    final_start = rows[labels[-1]]["lineage_start"]
    assert labels.index(final_start) > labels.index(truth["memorised"][-1]), final_start
    assert labels.index(final_start) <= labels.index(truth["settled"][0]), final_start
    assert {rows[label]["lineage_start"] for label in truth["settled"]} == {final_start}


def test_every_lineage_breaks_when_training_starts(loaded, truth):
    """No channel of the first trained checkpoint continues a lineage of the random initialisation."""
    run, ids = loaded
    rows = run("changed_between", checkpoint_a=ids[0], checkpoint_b=ids[1])
    channels = {r["channel"] for r in run("checkpoint_channels", checkpoint=ids[1])}
    assert {r["channel"] for r in rows} == channels


def ranks(row: dict) -> dict[str, int]:
    return {role: int(rank) for role, rank in (entry.split("=") for entry in row["ranks"])}


@pytest.mark.parametrize("channel", ["embed", "L0.mlp"])
def test_ranks_after_the_algorithm_forms_are_at_most_those_during_memorisation(loaded, truth, channel):
    """Under the series rank rule, every role's rank at every settled checkpoint is at most its rank at
    every memorisation checkpoint; the plain-PyTorch size of the embedding's principal subspace falls too."""
    rows = timeline(loaded, channel, "held-out")
    assert all(rows[label]["rank_rule"] == rows[truth["labels"][-1]]["rank_rule"] for label in truth["labels"])
    for role in ranks(rows[truth["labels"][-1]]):
        before = min(ranks(rows[label])[role] for label in truth["memorised"])
        after = max(ranks(rows[label])[role] for label in truth["settled"])
        assert after <= before, (role, before, after)
    measured = truth["measured"]
    assert max(measured[label]["rank"] for label in truth["settled"]) < min(
        measured[label]["rank"] for label in truth["memorised"]
    )


def test_every_circuit_faithfulness_is_in_range_or_null_with_the_reason(loaded, truth):
    """On every checkpoint and slice the circuit's faithfulness is in [0, 1] (to 0.05) or null with its
    reason; on the held-out pairs it is null with "no better than chance" exactly where the
    plain-PyTorch held-out loss is above chance."""
    run, ids = loaded
    for checkpoint in ids:
        label = checkpoint.split("@")[1]
        for name in ("train", "held-out"):
            (circuit,) = run("faithful_circuit", checkpoint=checkpoint, slice=name)
            if circuit["faithfulness"] is None:
                assert circuit["reason"], (label, name)
            else:
                assert -0.05 <= circuit["faithfulness"] <= 1.05 and circuit["reason"] is None, (label, name, circuit)
            if name == "held-out":
                below_chance = truth["measured"][label]["held_out_loss"] > CHANCE
                assert (circuit["faithfulness"] is None) == below_chance, (label, circuit)
                if below_chance:
                    assert "no better than chance" in circuit["reason"], circuit
