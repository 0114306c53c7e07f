"""GPU tier: deselected by default (``-m 'not gpu'``); run with ``-m gpu`` where torch sees CUDA."""

import pytest
import torch


@pytest.fixture(autouse=True)
def cuda_device() -> None:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tier needs a CUDA device: run it on a GPU machine (benchmarks/gpu.sh)", pytrace=False)
