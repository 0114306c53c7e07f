"""TransformerLens-native checkpoints (a HookedTransformerConfig JSON plus a HookedTransformer state
dict) load through ingest/native.py and compute what the model they hold computes; bad ones are one
clear error.

References are independent of the loader: TransformerLens 4's own TL-native model (``boot_native``)
for the kinds it has, and the Hugging Face model itself for HookedTransformer-format exports of
GPT-NeoX (rotary on halves, partial, parallel) and GPT-J (rotary on adjacent pairs).
"""

import json

import pytest
import torch
from builders import native_from_hf, native_model, random_gptj, random_neox, sinusoidal_positions

from circuit_atlas.errors import UserError
from circuit_atlas.ingest.model_adapter import load_model, site

SMALL = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=20)

NATIVE_KINDS = {
    "attn-only-no-norm-bidirectional-classes": dict(
        attn_only=True, normalization_type=None, attention_dir="bidirectional", d_vocab_out=7
    ),
    "layernorm-unfolded-gelu": dict(d_mlp=64, act_fn="gelu", normalization_type="LN"),
    "layernorm-folded-relu": dict(d_mlp=64, act_fn="relu", normalization_type="LNPre"),
    "rms-gated-silu-grouped": dict(
        d_mlp=48, act_fn="silu", normalization_type="RMS", gated_mlp=True, n_key_value_heads=2
    ),
    "no-norm-relu-classes": dict(d_mlp=64, act_fn="relu", normalization_type=None, d_vocab_out=5),
}


def log_probs(logits):
    """The processed unembedding is centred: logits agree up to a constant per position."""
    return torch.log_softmax(logits, -1)


def tokens(vocab, n=3, length=10, seed=2):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(NATIVE_KINDS))
def test_native_checkpoint_computes_what_transformer_lens_computes(kind, tmp_path):
    files = native_model(tmp_path, **SMALL, **NATIVE_KINDS[kind])
    model = load_model(str(files.config), str(files.weights))
    batch = tokens(SMALL["d_vocab"])
    with torch.no_grad():
        torch.testing.assert_close(log_probs(model.run(batch)), log_probs(files.reference(batch)), atol=1e-5, rtol=1e-4)
    config = NATIVE_KINDS[kind]
    assert model.spec.has_mlp == (not config.get("attn_only", False))
    assert model.spec.d_vocab_out == config.get("d_vocab_out", SMALL["d_vocab"])
    assert model.spec.causal == (config.get("attention_dir", "causal") == "causal")
    assert (
        model.spec.normalization
        == {"LN": "LN", "LNPre": "LN", "RMS": "RMS", None: "none"}[config["normalization_type"]]
    )


HF_EXPORTS = {  # builder, the HookedTransformerConfig fields TransformerLens sets for the family
    "neox-parallel-partial-rotary": (
        lambda p: random_neox(p, use_parallel_residual=True, rotary_pct=0.5),
        {"rotary_dim": 4},
    ),
    "neox": (random_neox, {"rotary_dim": 8}),
    "gptj": (random_gptj, {"rotary_dim": 4, "rotary_adjacent_pairs": True}),
}


@pytest.mark.parametrize("family", sorted(HF_EXPORTS))
def test_rotary_and_parallel_exports_compute_what_the_hugging_face_model_computes(family, tmp_path):
    build, extra = HF_EXPORTS[family]
    files = native_from_hf(tmp_path / "native", build(tmp_path / "hf"), **extra)
    model = load_model(str(files.config), str(files.weights))
    assert model.spec.positional == "rotary" and model.spec.family in ("GPTNeoXForCausalLM", "GPTJForCausalLM")
    batch = tokens(model.spec.d_vocab)
    with torch.no_grad():
        torch.testing.assert_close(log_probs(model.run(batch)), log_probs(files.reference(batch)), atol=1e-5, rtol=1e-4)


def test_sinusoidal_positions_a_wrapped_state_dict_and_a_gpu_saved_file_load_on_the_cpu(tmp_path):
    table = sinusoidal_positions(SMALL["n_ctx"], SMALL["d_model"])
    files = native_model(tmp_path, wrap="model_state_dict", gpu=True, W_pos=table, **SMALL, d_mlp=64, act_fn="gelu")
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really is tagged as saved on a GPU
        torch.load(files.weights, weights_only=True)
    model = load_model(str(files.config), str(files.weights))
    batch = tokens(SMALL["d_vocab"])
    with torch.no_grad():
        torch.testing.assert_close(log_probs(model.run(batch)), log_probs(files.reference(batch)), atol=1e-5, rtol=1e-4)
    centred = table - table.mean(-1, keepdim=True)  # LayerNorm model: writing weights are centred
    torch.testing.assert_close(model.runner.params["pos_embed.W_pos"], centred, atol=1e-6, rtol=1e-5)


def test_bidirectional_attention_lets_the_first_position_see_the_last(tmp_path):
    kind = NATIVE_KINDS["attn-only-no-norm-bidirectional-classes"]
    files = native_model(tmp_path / "b", **SMALL, **kind)
    bidirectional = load_model(str(files.config), str(files.weights))
    files = native_model(tmp_path / "c", **SMALL, **{**kind, "attention_dir": "causal"})
    causal = load_model(str(files.config), str(files.weights))
    batch = tokens(SMALL["d_vocab"], n=1)
    changed = batch.clone()
    changed[0, -1] = (batch[0, -1] + 1) % SMALL["d_vocab"]
    with torch.no_grad():
        assert not torch.allclose(bidirectional.run(batch)[0, 0], bidirectional.run(changed)[0, 0])
        torch.testing.assert_close(causal.run(batch)[0, 0], causal.run(changed)[0, 0])
    assert site("mlp_out", 0) not in bidirectional.runner.hook_names  # attention-only: no MLP sites


def corrupt_state(change):
    def corrupt(config, weights):
        state = torch.load(weights, weights_only=True)
        change(state)
        torch.save(state, weights)

    return corrupt


def corrupt_config(change):
    def corrupt(config, weights):
        fields = json.loads(config.read_text())
        change(fields)
        config.write_text(json.dumps(fields))

    return corrupt


def set_nan(state):
    state["blocks.1.attn.W_V"][0, 0, 0] = float("nan")


BAD_INPUTS = {
    "shapes disagree": (
        corrupt_config(lambda c: c.update(d_mlp=48)),
        r"do not match the config .*blocks\.0\.mlp\.W_in",
    ),
    "missing key": (corrupt_state(lambda s: s.pop("blocks.1.attn.W_O")), r"missing blocks\.1\.attn\.W_O"),
    "weights the config does not use": (
        corrupt_config(lambda c: c.update(attn_only=True)),
        r"unexpected blocks\.0\.ln2",
    ),
    "not a state dict": (lambda config, weights: weights.write_text("step,loss\n1,2.0\n"), "not a state dict"),
    "a list of tensors": (lambda config, weights: torch.save([torch.ones(2)], weights), "does not hold a state dict"),
    "NaN weights": (corrupt_state(set_nan), r"NaN or inf \(in blocks\.1\.attn\.W_V\)"),
    "unknown field": (corrupt_config(lambda c: c.update(use_magic=True)), "unknown HookedTransformerConfig field"),
    "unknown value": (corrupt_config(lambda c: c.update(normalization_type="BN")), "normalization_type='BN'"),
    "unsupported feature": (corrupt_config(lambda c: c.update(use_local_attn=True)), "cannot run use_local_attn"),
    "config not JSON": (lambda config, weights: config.write_text("n_layers: 2"), "is not JSON"),
    "n_layers as text": (corrupt_config(lambda c: c.update(n_layers="2")), r"n_layers='2' \(a whole number >= 1\)"),
    "n_layers as a float": (corrupt_config(lambda c: c.update(n_layers=2.0)), r"n_layers=2.0 \(a whole number"),
    "d_head 0": (corrupt_config(lambda c: c.update(d_head=0)), r"d_head=0 \(a whole number >= 1\)"),
    "eps as text": (corrupt_config(lambda c: c.update(eps="x")), r"eps='x' \(a number > 0\)"),
    "int64 weights": (
        corrupt_state(lambda s: s.update({k: v.long() for k, v in s.items()})),
        r"not floating point \(.*torch.int64\)",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_native_inputs_are_one_line_errors(bad, tmp_path):
    files = native_model(tmp_path, **SMALL, d_mlp=64, act_fn="relu")
    corrupt, message = BAD_INPUTS[bad]
    corrupt(files.config, files.weights)
    with pytest.raises(UserError, match=message) as error:
        load_model(str(files.config), str(files.weights))
    assert "\n" not in str(error.value)


def test_a_config_without_its_weights_is_a_clear_error(tmp_path):
    files = native_model(tmp_path, **SMALL, d_mlp=64, act_fn="relu")
    with pytest.raises(UserError, match="give its weights file"):
        load_model(str(files.config))
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(files.config), str(tmp_path / "missing.pt"))


def test_ingest_takes_a_config_with_weights_files_labelled_by_their_stems(tmp_path):
    from circuit_atlas.api import ingest_model
    from circuit_atlas.ingest.artifact import read_manifest
    from circuit_atlas.ingest.config import IngestConfig

    kind = dict(**SMALL, d_mlp=64, act_fn="gelu", model_name="tiny-native")
    first = native_model(tmp_path / "a", seed=0, **kind)
    later = native_model(tmp_path / "b", seed=1, **kind)
    steps = [first.weights.rename(tmp_path / "ckpt_200.pt"), later.weights.rename(tmp_path / "ckpt_1500.pt")]
    config = IngestConfig(seq_len=8, n_seq=12, energy=0.9)
    paths = ingest_model(first.config, ["random"], tmp_path / "out", config, checkpoints=steps[::-1], progress=False)
    manifests = [read_manifest(p) for p in paths]
    assert [(m["checkpoint"]["label"], m["checkpoint"]["step"]) for m in manifests] == [
        ("ckpt_200", 200),
        ("ckpt_1500", 1500),
    ]
    assert {m["model"]["name"] for m in manifests} == {"tiny-native"}
    assert manifests[0]["model"]["family"] == "HookedTransformer" and manifests[0]["model"]["d_vocab_out"] == 20
    one = ingest_model(first.config, ["random"], tmp_path / "one", config, weights=steps[0], progress=False)
    assert read_manifest(one[0])["checkpoint"]["label"] == "ckpt_200"


def test_ingest_of_a_bad_native_checkpoint_writes_nothing(tmp_path):
    from circuit_atlas.api import ingest_model

    files = native_model(tmp_path / "m", **SMALL, d_mlp=64, act_fn="relu")
    corrupt_state(set_nan)(files.config, files.weights)
    with pytest.raises(UserError, match="NaN or inf"):
        ingest_model(files.config, ["random"], tmp_path / "out", weights=files.weights, progress=False)
    with pytest.raises(UserError, match="give its weights with --weights"):
        ingest_model(files.config, ["random"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
