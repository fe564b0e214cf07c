"""Named datasets, resolved from local folders only: genforge never downloads anything.

Each name is looked for, in order, in ``$GENFORGE_DATA/<name>``, the user cache
``${XDG_CACHE_HOME:-~/.cache}/genforge/data/<name>`` and Debian's ``/usr/share/datasets/<name>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from genforge.data.readers import is_idx_folder, open_mnist
from genforge.data.result import ReaderResult
from genforge.errors import GenforgeError

NAMED_DATASETS = {
    "fashion-mnist": "Fashion-MNIST: 70,000 28x28 grey images of clothing in 10 classes (60,000 train, 10,000 test)",
    "mnist": "MNIST: 70,000 28x28 grey handwritten digits in 10 classes (60,000 train, 10,000 test)",
}

CLASS_NAMES = {
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "mnist": [str(digit) for digit in range(10)],
}

DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}
SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages put their files
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def search_dirs(name: str) -> list[Path]:
    """The places ``name`` is looked for, first match wins."""
    places = []
    if os.environ.get("GENFORGE_DATA"):
        places.append(Path(os.environ["GENFORGE_DATA"]).expanduser() / name)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    places.append(cache / "genforge" / "data" / name)
    places.append(SYSTEM_DATA_DIR / name)
    return places


def locate(name: str) -> Path | None:
    """The first search folder holding the dataset's IDX files, or None."""
    _check_name(name)
    return next((d for d in search_dirs(name) if d.is_dir() and is_idx_folder(d)), None)


def install_hint(name: str) -> str:
    files = ", ".join(IDX_FILES)
    place = f"put the four IDX files ({files}) in $GENFORGE_DATA/{name}"
    if name in DEBIAN_PACKAGES:
        return f"install it with `apt-get install {DEBIAN_PACKAGES[name]}` (Debian) or {place}"
    return place


def read_named(name: str, split: str) -> tuple[ReaderResult, Path]:
    """Read a named dataset's split; returns the reader result and the folder it came from."""
    folder = locate(name)
    if folder is None:
        searched = ", ".join(str(d) for d in search_dirs(name))
        raise GenforgeError(f"dataset '{name}' not found (searched {searched}); {install_hint(name)}")
    return open_mnist(folder, split, CLASS_NAMES[name]), folder


def fetch(name: str) -> str:
    """Report where a named dataset is; genforge never downloads, so when it is missing the
    error says how to install it."""
    folder = locate(name)
    if folder is None:
        searched = ", ".join(str(d) for d in search_dirs(name))
        raise GenforgeError(
            f"dataset '{name}' is not installed (searched {searched}); genforge does not download data: {install_hint(name)}"
        )
    return f"{name}: found in {folder} ({NAMED_DATASETS[name]}); nothing to download"


def _check_name(name: str) -> None:
    if name not in NAMED_DATASETS:
        raise GenforgeError(
            f"unknown dataset name '{name}'; named datasets are {', '.join(NAMED_DATASETS)}, or pass a path"
        )
