"""Model tier: fixtures shared by its modules (session-wide ones are in tests/conftest.py)."""

import pytest
from builders import native_model, random_gpt2

from circuit_atlas.ingest.model_adapter import load_model


@pytest.fixture(params=["causal", "bidirectional"])
def small_model(request, tmp_path):
    """A random GPT-2, or a bidirectional TransformerLens-native model (where padding is visible
    unless every pass hides it)."""
    if request.param == "causal":
        return load_model(str(random_gpt2(tmp_path / "m", seed=2)))
    shape = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20, d_mlp=64, act_fn="gelu")
    files = native_model(tmp_path / "m", normalization_type="LN", attention_dir="bidirectional", **shape)
    return load_model(str(files.config), str(files.weights))
