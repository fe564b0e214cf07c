"""Shared test set-up: tiny CPU work runs fastest (and steadiest on a busy 2-core machine) on one thread."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS too: KID on a busy machine

import pytest
import torch

torch.set_num_threads(1)

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.fixture
def fashion_available() -> bool:
    if not os.path.exists(FASHION):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return True
