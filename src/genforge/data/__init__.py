"""The data layer: any supported source -> one in-memory uint8 (N, H, W, C) array with labels.

    data = load_dataset("fashion-mnist", split="train", resolution=32, fit="pad")
    data.images  # uint8 (60000, 32, 32, 1)

Sources: a named dataset (see NAMED_DATASETS; a bare name wins over a folder of that name in the
working directory, write ./mnist for the folder) or a path: image folder or .zip (class
sub-folders give labels), IDX files of the MNIST family, CIFAR-10/100 python batches (folder or
.tar.gz), or .npz. Fitting and channel conversion happen once here, never in the training loop.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genforge.data.named import NAMED_DATASETS, fetch, read_named
from genforge.data.readers import read_path
from genforge.data.result import RaggedImages
from genforge.data.transforms import FITS, check_options, convert_channels, fit_images
from genforge.errors import GenforgeError

SPLITS = ("train", "test", "all")

__all__ = ["FITS", "NAMED_DATASETS", "SPLITS", "ImageData", "dataset_key", "describe", "fetch", "load_dataset"]


@dataclass
class ImageData:
    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,)
    class_names: list[str] | None
    source: str  # what it was loaded from, for messages and reports

    def __post_init__(self):
        assert self.images.dtype == np.uint8 and self.images.ndim == 4 and self.images.shape[3] in (1, 3), (
            f"expected uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
        )
        assert self.labels is None or (self.labels.dtype == np.int64 and self.labels.shape == (len(self.images),))

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None and len(self.labels):
            return int(self.labels.max()) + 1
        return None

    @property
    def resolution(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(
    source: str,
    *,
    split: str = "train",
    resolution: int | None = None,
    fit: str = "none",
    channels: int | None = None,
    limit: int | None = None,
) -> ImageData:
    """Read ``source``'s ``split`` ('train', 'test' or 'all'), keep the first ``limit`` images,
    fit them to ``resolution`` x ``resolution`` (fit: none | resize | center-crop | pad) and
    convert to ``channels`` (1 grey, 3 RGB, None as stored)."""
    source = str(source)
    if split not in SPLITS:
        raise GenforgeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise GenforgeError(f"limit must be a positive integer, got {limit!r}")
    check_options(resolution, fit, channels)
    if source in NAMED_DATASETS:
        (images, labels, class_names), folder = read_named(source, split)
        where = f"{source} ({folder})"
    else:
        images, labels, class_names = read_path(Path(source).expanduser(), split, limit)
        where = source
    if len(images) == 0:
        raise GenforgeError(f"{where}: holds no images for split '{split}'")
    if limit is not None:
        images = (
            RaggedImages(images[:limit], images.names[:limit]) if isinstance(images, RaggedImages) else images[:limit]
        )
        labels = None if labels is None else labels[:limit]
    images = convert_channels(fit_images(images, resolution, fit), channels)
    return ImageData(images=images, labels=labels, class_names=class_names, source=where)


def describe(data: ImageData) -> dict:
    """Summary for ``genforge data info``: sizes, class balance and pixel statistics."""
    class_counts = None
    if data.labels is not None:
        counts = np.bincount(data.labels, minlength=data.num_classes or 0)
        names = data.class_names or [str(i) for i in range(len(counts))]
        class_counts = {names[i]: int(c) for i, c in enumerate(counts)}
    empty = len(data) == 0
    return {
        "source": data.source,
        "count": len(data),
        "height": data.images.shape[1],
        "width": data.images.shape[2],
        "channels": data.channels,
        "num_classes": data.num_classes,
        "class_counts": class_counts,
        "min": None if empty else int(data.images.min()),
        "max": None if empty else int(data.images.max()),
        "mean": None if empty else float(data.images.mean(dtype=np.float64)),
    }


def dataset_key(source: str, split: str, resolution: int | None, fit: str, channels: int | None) -> str:
    """Stable, filesystem-safe name for caches, e.g. 'fashion-mnist_train_32_pad_c1'. Paths get
    their base name plus a short hash of the absolute path, so two 'data' folders never collide."""
    source = str(source)
    if source in NAMED_DATASETS:
        base = source
    else:
        path = Path(source).expanduser().resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        base = f"{re.sub(r'[^A-Za-z0-9.-]+', '-', path.name).strip('-.') or 'data'}-{digest}"
    size = "native" if resolution is None else str(resolution)
    colour = "native" if channels is None else str(channels)
    return f"{base}_{split}_{size}_{fit}_c{colour}"
