"""The reference models' cache: the shipped recipes are copied byte for byte (the same weights on
every machine), another recipe trains into a folder of its own and never touches the default's,
and a recipe that cannot train is refused before anything is deleted."""

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from circuit_atlas.cli import cli
from circuit_atlas.ingest.model_adapter import CHECKPOINT_SIDECAR
from circuit_atlas.reference.induction import InductionRecipe, train_induction
from circuit_atlas.reference.keyvalue import KeyValueRecipe
from circuit_atlas.reference.seeds import VARIANTS
from circuit_atlas.reference.training import SHIPPED, checkpoint_dirs, folder_name, is_trained

SHORT = replace(InductionRecipe(), steps=2, checkpoint_every=1, warmup=1)


def strict_json(path):
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    return json.loads(path.read_text(), parse_constant=lambda word: pytest.fail(f"{path} holds {word}"))


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("recipe", [*VARIANTS, KeyValueRecipe()], ids=lambda r: r.name)
def test_the_recipes_the_tests_use_are_shipped_complete(recipe):
    root = SHIPPED / folder_name(recipe)
    assert is_trained(root, recipe)
    steps = [folder.name for folder in checkpoint_dirs(root)]
    assert steps == [f"step-{s:05d}" for s in range(0, recipe.steps + 1, recipe.checkpoint_every)]
    for folder in checkpoint_dirs(root):
        sidecar = strict_json(folder / CHECKPOINT_SIDECAR)
        assert sidecar["model"] == recipe.name and sidecar["label"] == folder.name
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert strict_json(root / "head_scores.json").keys() == set(steps)


def test_a_shipped_recipe_is_copied_not_trained(tmp_path):
    messages = []
    folders = train_induction(InductionRecipe(), tmp_path, progress=False, echo=messages.append)
    root = tmp_path / "induction-s0"
    assert folders == checkpoint_dirs(root) and "Copied the shipped" in messages[-1]
    assert files(root) == files(SHIPPED / "induction-s0")
    assert train_induction(InductionRecipe(), tmp_path, progress=False, echo=messages.append) == folders
    assert "Reusing" in messages[-1]


def test_another_recipe_trains_beside_the_default_and_leaves_it_alone(tmp_path):
    default = train_induction(InductionRecipe(), tmp_path, progress=False, echo=lambda _: None)
    before = files(tmp_path / "induction-s0")
    folders = train_induction(SHORT, tmp_path, progress=False, echo=lambda _: None)
    name = folder_name(SHORT)
    assert name.startswith("induction-s0-") and name != "induction-s0"
    assert [f.name for f in folders] == ["step-00000", "step-00001", "step-00002"]
    assert all(f.parent.name == name for f in folders)
    assert files(tmp_path / "induction-s0") == before and checkpoint_dirs(tmp_path / "induction-s0") == default
    sidecars = [strict_json(f / CHECKPOINT_SIDECAR) for f in folders]
    assert [s["model"] for s in sidecars] == [name] * 3  # another model in the catalog, not induction-s0
    assert sidecars[0]["train_loss"] is None and all(s["train_loss"] > 0 for s in sidecars[1:])
    assert folder_name(replace(SHORT, learning_rate=2e-3)) != name  # any other setting, another folder
    assert folder_name(replace(InductionRecipe(), seed=3, n_heads=4)) == "induction-2x4-s3"  # the name says all


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_reference_train_refuses_steps_below_one_and_deletes_nothing(steps, tmp_path):
    train_induction(InductionRecipe(), tmp_path, progress=False, echo=lambda _: None)
    before = files(tmp_path)
    result = CliRunner().invoke(cli, ["reference", "train", "--out", str(tmp_path), "--steps", steps])
    assert result.exit_code == 2 and "--steps" in result.output and "x>=1" in result.output, result.output
    assert files(tmp_path) == before
    with pytest.raises(ValueError, match="steps must be at least 1"):
        train_induction(replace(InductionRecipe(), steps=0), tmp_path, progress=False, echo=lambda _: None)
    assert files(tmp_path) == before
