"""Shared test set-up: tiny CPU work runs fastest (and steadiest on a busy 2-core machine) on one thread."""

import os
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _folder_cache(tmp_path_factory, monkeypatch):
    """Image folders are decoded once into genforge's cache (data/cache.py): tests keep those
    caches out of ~/.cache, in this session's temporary folder, unless they set GENFORGE_CACHE."""
    shared = tmp_path_factory.getbasetemp() / "folder-cache"

    def root():
        return Path(os.environ["GENFORGE_CACHE"]) if os.environ.get("GENFORGE_CACHE") else shared

    monkeypatch.setattr("genforge.data.cache.cache_root", root)
