"""On a CUDA device an ingest writes the CPU's artifact: the same ranks and matches, the same scores
to float32 precision. Deselected by default (CI has no GPU): ``python -m pytest -m gpu tests/gpu``."""

import pandas as pd
import torch
from builders import PLANTED_HEAD_EDGES, planted_gpt2

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest


def artifacts(source: str, out, config: IngestConfig, data: list[str]):
    return {
        device: read_artifact(
            ingest(source, [], data, out / device, config, device, progress=False, echo=lambda _: None)[0]
        )
        for device in ("cpu", "cuda")
    }


def test_the_reference_model_ingests_alike_on_cpu_and_cuda(reference_checkpoints, tmp_path):
    # One fraction for both (the search could land one grid step apart), whose rank boundaries fall
    # among large singular values, not among those at float32 noise as at 0.9999.
    config = IngestConfig(energy=0.9)
    both = artifacts(str(reference_checkpoints[-1]), tmp_path, config, ["repeated", "random"])
    cpu, cuda = both["cpu"].tables, both["cuda"].tables
    pd.testing.assert_frame_equal(
        cpu["subspaces"][["block", "role", "rank"]], cuda["subspaces"][["block", "role", "rank"]]
    )
    for table, columns in (
        ("edges", ["weight", "strength", "flow", "attribution"]),
        ("activity", ["attribution", "ablation", "mean_norm"]),
    ):
        for column in columns:
            a, b = torch.tensor(cpu[table][column].values), torch.tensor(cuda[table][column].values)
            torch.testing.assert_close(b, a, rtol=2e-3, atol=2e-4, msg=f"{table}.{column}")


def test_planted_edges_come_out_exactly_on_cuda(tmp_path):
    model = planted_gpt2(tmp_path / "model")
    config = IngestConfig(seq_len=16, n_seq=96, energy=0.9999)
    [path] = ingest(
        str(model), [], ["random", "repeated"], tmp_path / "out", config, "cuda", progress=False, echo=lambda _: None
    )
    edges = read_artifact(path).tables["edges"]
    heads = edges[edges["writer"].str.contains("H") & edges["reader"].str.contains("H")]
    top = heads.sort_values("flow", ascending=False).head(len(PLANTED_HEAD_EDGES))
    assert set(zip(top["writer"], top["reader"], top["role"])) == PLANTED_HEAD_EDGES
