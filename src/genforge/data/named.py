"""Named datasets, resolved from local folders only: genforge never downloads anything.

Each declares how to recognise its folder, how to open it and how to install it (NamedDataset);
a new one is one more entry in NAMED_DATASETS.

Each name is looked for, in order, in ``$GENFORGE_DATA/<name>``, the user cache
``${XDG_CACHE_HOME:-~/.cache}/genforge/data/<name>`` and Debian's ``/usr/share/datasets/<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genforge.data.emoji import is_emoji_folder, open_emoji
from genforge.data.readers import is_idx_folder, open_mnist
from genforge.data.result import ReaderResult
from genforge.errors import GenforgeError

SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages put their files
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class NamedDataset:
    """What a named dataset declares; the search, the messages and load_dataset are shared."""

    description: str
    recognise: Callable[[Path], bool]  # does this folder hold it?
    open: Callable[[Path, str], ReaderResult]  # (folder, split) -> images, labels, class names
    install_hint: str  # how to get it, ends the "not found" messages
    # Its own way to reach a model's resolution when the run sets none, e.g. (32, "pad"): the
    # MNIST family is padded from 28 to 32 (strokes keep their width, and 32 suits every model).
    preferred_fit: tuple[int, str] | None = None


def _idx_dataset(name: str, description: str, class_names: list[str], debian_package: str | None) -> NamedDataset:
    place = f"put the four IDX files ({', '.join(IDX_FILES)}) in $GENFORGE_DATA/{name}"
    hint = f"install it with `apt-get install {debian_package}` (Debian) or {place}" if debian_package else place
    return NamedDataset(
        description, is_idx_folder, lambda folder, split: open_mnist(folder, split, class_names), hint, (32, "pad")
    )


NAMED_DATASETS = {
    "fashion-mnist": _idx_dataset(
        "fashion-mnist",
        "Fashion-MNIST: 70,000 28x28 grey images of clothing in 10 classes (60,000 train, 10,000 test)",
        [
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
        debian_package="dataset-fashion-mnist",
    ),
    "mnist": _idx_dataset(
        "mnist",
        "MNIST: 70,000 28x28 grey handwritten digits in 10 classes (60,000 train, 10,000 test)",
        [str(digit) for digit in range(10)],
        debian_package=None,
    ),
    "emoji": NamedDataset(
        "emoji: 3,786 64x64 Noto colour emoji on white in 10 categories (one split), Apache-2.0 images "
        "from the npm package emoji-datasource-google@16.0.0",
        is_emoji_folder,
        open_emoji,
        "run scripts/fetch-emoji.sh from genforge's source tree (it unpacks emoji-datasource-google@16.0.0 "
        "from npm into $GENFORGE_DATA/emoji, else ~/.cache/genforge/data/emoji)",
    ),
}


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
    """The first search folder that the dataset recognises as its own, or None."""
    _check_name(name)
    recognise = NAMED_DATASETS[name].recognise
    return next((d for d in search_dirs(name) if d.is_dir() and recognise(d)), None)


# Each named dataset is decoded once per process (emoji's 3,786 PNGs take about 3 s; a demo reads
# its data a dozen times): a copy of the decoded arrays is handed out each time.
_DECODED: dict[tuple, ReaderResult] = {}


def read_named(name: str, split: str) -> tuple[ReaderResult, Path]:
    """Read a named dataset's split; returns the reader result and the folder it came from."""
    folder = locate(name)
    if folder is None:
        searched = ", ".join(str(d) for d in search_dirs(name))
        raise GenforgeError(f"dataset '{name}' not found (searched {searched}); {NAMED_DATASETS[name].install_hint}")
    key = (name, split, str(folder.resolve()), folder.stat().st_mtime_ns)
    if key not in _DECODED:
        _DECODED[key] = NAMED_DATASETS[name].open(folder, split)
    images, labels, class_names = _DECODED[key]
    if isinstance(images, np.ndarray):
        images = images.copy()
    labels = None if labels is None else labels.copy()
    return (images, labels, None if class_names is None else list(class_names)), folder


def fetch(name: str) -> str:
    """Report where a named dataset is; genforge never downloads, so when it is missing the
    error says how to install it."""
    folder = locate(name)
    if folder is None:
        searched = ", ".join(str(d) for d in search_dirs(name))
        raise GenforgeError(
            f"dataset '{name}' is not installed (searched {searched}); genforge does not download data: {NAMED_DATASETS[name].install_hint}"
        )
    return f"{name}: found in {folder} ({NAMED_DATASETS[name].description}); nothing to download"


def _check_name(name: str) -> None:
    if name not in NAMED_DATASETS:
        raise GenforgeError(
            f"unknown dataset name '{name}'; named datasets are {', '.join(NAMED_DATASETS)}, or pass a path"
        )
