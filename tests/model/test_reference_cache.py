"""The reference models' cache: the shipped recipes are copied byte for byte (the same weights on
every machine), another recipe trains into a folder of its own and never touches the default's,
and a recipe that cannot train is refused before anything is deleted."""

import json
import math
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from circuit_atlas.cli import cli
from circuit_atlas.ingest.model_adapter import CHECKPOINT_SIDECAR
from circuit_atlas.reference.attention_only import (
    NATIVE_CONFIG,
    AttentionOnlyRecipe,
    native_checkpoints,
    train_attention_only,
)
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


@pytest.mark.parametrize("recipe", [*VARIANTS, KeyValueRecipe(), AttentionOnlyRecipe()], ids=lambda r: r.name)
def test_the_recipes_the_tests_use_are_shipped_complete(recipe):
    root = SHIPPED / folder_name(recipe)
    assert is_trained(root, recipe)
    native = isinstance(recipe, AttentionOnlyRecipe)  # TransformerLens-native: a config and weights files
    checkpoints = native_checkpoints(root) if native else checkpoint_dirs(root)
    steps = [checkpoint.stem for checkpoint in checkpoints]
    assert steps == [f"step-{s:05d}" for s in range(0, recipe.steps + 1, recipe.checkpoint_every)]
    for checkpoint in checkpoints:
        if native:  # the sidecar's facts beside the state dict; the label is the file's stem
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
            assert saved["step"] == int(checkpoint.stem.removeprefix("step-")) and "embed.W_E" in saved["state_dict"]
            assert saved["train_loss"] is None if saved["step"] == 0 else math.isfinite(saved["train_loss"])
            continue
        sidecar = strict_json(checkpoint / CHECKPOINT_SIDECAR)
        assert sidecar["model"] == recipe.name and sidecar["label"] == checkpoint.name
        assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()
    if native:
        assert strict_json(root / NATIVE_CONFIG) == recipe.hooked_transformer_config()
        assert recipe.hooked_transformer_config()["model_name"] == recipe.name
    assert strict_json(root / "head_scores.json").keys() == set(steps)


@pytest.mark.parametrize(
    "recipe,train",
    [(InductionRecipe(), train_induction), (AttentionOnlyRecipe(), train_attention_only)],
    ids=["induction", "attention-only"],
)
def test_a_shipped_recipe_is_copied_not_trained(recipe, train, tmp_path):
    messages = []
    checkpoints = train(recipe, tmp_path, progress=False, echo=messages.append)
    root = tmp_path / recipe.name
    assert [c.parent for c in checkpoints] == [root] * len(checkpoints) and "Copied the shipped" in messages[-1]
    assert files(root) == files(SHIPPED / recipe.name)
    assert train(recipe, tmp_path, progress=False, echo=messages.append) == checkpoints
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
