"""The first-unique-character reference model (shipped trained): it solves its task, and its layer-1
heads split the answer letters among them. Measured here by mean ablation in the model's own
PyTorch forward on fresh sequences, apart from the ground truth saved at training."""

import json
from collections import Counter

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.attention_only import NATIVE_CONFIG, AttentionOnly
from circuit_atlas.reference.first_unique import (
    HEAD_LETTERS,
    LETTER_EFFECTS,
    FirstUniqueRecipe,
    first_unique_answers,
    first_unique_batch,
    letter_effects,
    train_first_unique,
    write_class_slices,
)

RECIPE = FirstUniqueRecipe()
HEADS = [f"L1H{h}" for h in range(RECIPE.n_heads)]


@pytest.fixture(scope="module")
def final():
    files = train_first_unique(RECIPE, default_reference_dir(), progress=False, echo=lambda _: None)
    return files[-1], AttentionOnly.from_checkpoint(RECIPE, files[-1])


@pytest.fixture(scope="module")
def fresh():
    return first_unique_batch(FirstUniqueRecipe(batch_size=2000), torch.Generator().manual_seed(1234))


def test_the_trained_model_answers_the_first_unique_letter(final, fresh):
    _, model = final
    with torch.no_grad():
        predicted = model(fresh).argmax(-1)
    assert (predicted == first_unique_answers(fresh, RECIPE.unknown)).float().mean() > 0.9


def test_each_layer_1_head_alone_serves_letters_of_its_own(final, fresh):
    """Each head has at least two letters that it alone serves: ablating it costs each of them more
    than twice what ablating any other layer-1 head does, and those letters are the head's group in
    the ground truth saved at training (on other sequences)."""
    path, model = final
    effects = letter_effects(model, fresh)
    own = {
        head: [
            letter
            for letter in range(RECIPE.unknown)
            if all(effects[head][letter] > 2 * effects[other][letter] for other in HEADS if other != head)
        ]
        for head in HEADS
    }
    assert all(len(letters) >= 2 for letters in own.values()), own
    assert {head: tuple(letters) for head, letters in own.items()} == HEAD_LETTERS
    saved = json.loads((path.parent / LETTER_EFFECTS).read_text())[path.stem]["groups"]
    assert all(set(own[head]) <= set(saved[head]) for head in HEADS), (own, saved)
    assert all(min(effects[head][letter] for letter in own[head]) > 2.5 for head in HEADS), effects


def test_discovery_finds_the_classes_that_use_each_head_and_their_circuits_hold_it(final, tmp_path):
    """An ingest of the three classes (128 prompts each, answered by the letters one layer-1 head alone
    serves) discovers them as situations by exact usage (adjusted Rand index at least 0.9), and the
    circuit of each situation holds the head of the class most of its prompts come from."""
    path, _ = final
    data = write_class_slices(tmp_path / "data", 128, seed=5)
    config = IngestConfig(situations=6, examples=0)
    [out] = ingest(
        str(path.parent / NATIVE_CONFIG),
        [str(path)],
        data,
        tmp_path / "out",
        config,
        progress=False,
        echo=lambda _: None,
    )
    artifact = read_artifact(out)
    found = [s for s in artifact.manifest["slices"] if s.get("discovered")]
    label = {tuple(prompt): k for k, s in enumerate(found) for prompt in s["prompts"]}
    prompts = [(head, i) for head in HEAD_LETTERS for i in range(128)]
    assert all(p in label for p in prompts), "every prompt is in a situation"
    truth = [list(HEAD_LETTERS).index(head) for head, _ in prompts]
    assert adjusted_rand_score(truth, [label[p] for p in prompts]) >= 0.9, [s["description"] for s in found]
    activity = artifact.tables["activity"]
    for situation in found:
        [(head, _)] = Counter(name for name, _ in situation["prompts"]).most_common(1)
        circuit = activity[(activity.slice == situation["name"]) & activity.in_circuit]["block"].tolist()
        assert head in circuit, (situation["description"], circuit)
        assert situation["description"].split("set it apart (mean effect, nats): ")[1].startswith(head)
