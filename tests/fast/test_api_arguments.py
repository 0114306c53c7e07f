"""The Python API refuses arguments of the wrong kind with a UserError that names the argument,
before it computes or connects, and lists its names to ``dir()`` although it imports lazily."""

import pytest

import circuit_atlas as ca
from circuit_atlas.errors import UserError


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda tmp: ca.ingest_model("m", data="random", out=tmp), "data must be a list of slice arguments"),
        (lambda tmp: ca.ingest_model("m", data=[1], out=tmp), "data must be a list of slice arguments"),
        (lambda tmp: ca.ingest_model(None, data=["random"], out=tmp), "model must be a model name"),
        (lambda tmp: ca.ingest_model("m", ["random"], tmp, config={"n_seq": 4}), "config must be an IngestConfig"),
        (lambda tmp: ca.ingest_model("m", ["random"], out=None), "out must be a folder path"),
        (lambda tmp: ca.open_catalog(123), "where must be a Bolt URI or the folder of a local server"),
        (lambda tmp: ca.open_catalog(tmp / "no-such-dir"), "holds no local Neo4j server"),
    ],
    ids=["data a string", "data of ints", "model None", "config a dict", "out None", "where an int", "no server"],
)
def test_wrong_arguments_are_user_errors(call, words, tmp_path, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")  # a folder is not replaced by the variable
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    with pytest.raises(UserError, match=words):
        call(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_dir_lists_the_lazy_api():
    assert {"Catalog", "IngestConfig", "ingest_model", "open_catalog", "__version__"} <= set(dir(ca))
