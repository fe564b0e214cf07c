"""Any source genforge reads -> its images: in memory (``load_dataset``: an ``ImageData``) or as a
handle that reads batches from disk (``open_dataset``: a packed dataset or an image folder's
cache), its labels alone (``labels_of``), a summary (``describe``) and a name for caches
(``dataset_key``). What a source is, and how it is fitted, is in this package's docstring.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genforge.data.cache import cached_images
from genforge.data.imagefiles import list_image_files
from genforge.data.named import NAMED_DATASETS, read_named
from genforge.data.packed import CHUNK_BYTES, PackedImages, is_packed
from genforge.data.readers import is_image_files, read_path
from genforge.data.result import RaggedImages
from genforge.data.transforms import check_options, convert_channels, fit_images
from genforge.errors import GenforgeError
from genforge.progress import SILENT, Reporter

SPLITS = ("train", "test", "all")


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
    def shape(self) -> tuple[int, int, int, int]:
        return self.images.shape  # (N, H, W, C)

    @property
    def resolution(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices) -> np.ndarray:
        """uint8 (n, H, W, C): the images at ``indices``, as PackedImages.take answers."""
        return self.images[np.asarray(indices, dtype=np.int64).reshape(-1)]

    def chunks(self, max_bytes: int | None = None, stop: int | None = None) -> Iterator[np.ndarray]:
        """The first ``stop`` images in order, in slices of at most ``max_bytes``, as PackedImages.chunks."""
        stop = len(self) if stop is None else min(stop, len(self))
        step = max(1, (max_bytes or CHUNK_BYTES) // max(1, self.images[0].nbytes)) if stop else 1
        for start in range(0, stop, step):
            yield self.images[start : min(start + step, stop)]


def load_dataset(
    source: str,
    *,
    split: str = "train",
    resolution: int | None = None,
    fit: str = "none",
    channels: int | None = None,
    limit: int | None = None,
    reporter: Reporter = SILENT,
) -> ImageData:
    """Read ``source``'s ``split`` ('train', 'test' or 'all'), keep the first ``limit`` images,
    fit them to ``resolution`` x ``resolution`` (fit: none | resize | center-crop | pad) and
    convert to ``channels`` (1 grey, 3 RGB, None as stored). A packed dataset is read into
    memory: its first ``limit`` images, or all of them if they fit ``in_memory_limit()``. An
    image folder or zip is decoded once into a cache (data/cache.py; a bar shows the first
    decoding on ``reporter``) and read from there."""
    source = str(source)
    _check_request(split, limit, resolution, fit, channels)
    if (packed_folder := _packed_path(source)) is not None:
        return _materialize(_open_packed(packed_folder, split, resolution, channels), limit)
    if (files := _image_files_path(source)) is not None:
        cached = cached_images(files, split, resolution, fit, channels, limit, reporter)
        return ImageData(cached.read(0, len(cached)), cached.labels, cached.class_names, source)
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


def labels_of(source: str, split: str = "train") -> np.ndarray | None:
    """The labels of a source's split (None: unlabelled); an image folder or zip is only listed
    (its class sub-folders are its labels), not decoded, so images of mixed sizes are no obstacle."""
    if (files := _image_files_path(str(source))) is not None:
        with list_image_files(files) as listed:
            return listed.labels
    return load_dataset(source, split=split).labels


def open_dataset(
    source: str,
    *,
    split: str = "train",
    resolution: int | None = None,
    fit: str = "none",
    channels: int | None = None,
    limit: int | None = None,
    reporter: Reporter = SILENT,
) -> ImageData | PackedImages:
    """Like load_dataset, but a packed dataset (without a ``limit``) comes back as a PackedImages
    handle that reads images only when asked (take, chunks): the training loop's entry point.
    So does an image folder or zip, as a handle on its cache (decoded once, see data/cache.py)."""
    source = str(source)
    _check_request(split, limit, resolution, fit, channels)
    if limit is None and (packed_folder := _packed_path(source)) is not None:
        return _open_packed(packed_folder, split, resolution, channels)
    if (files := _image_files_path(source)) is not None:
        return cached_images(files, split, resolution, fit, channels, limit, reporter)
    return load_dataset(source, split=split, resolution=resolution, fit=fit, channels=channels, limit=limit)


def _check_request(split: str, limit: int | None, resolution: int | None, fit: str, channels: int | None) -> None:
    """Validate the options before anything is read, so bad flags fail at once."""
    if split not in SPLITS:
        raise GenforgeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise GenforgeError(f"limit must be a positive integer, got {limit!r}")
    check_options(resolution, fit, channels)


def _packed_path(source: str) -> Path | None:
    """The folder, if ``source`` is a packed dataset (a bare dataset name never is)."""
    path = Path(source).expanduser()
    return path if source not in NAMED_DATASETS and is_packed(path) else None


def _image_files_path(source: str) -> Path | None:
    """The path, if ``source`` is an image folder or zip (read through the folder cache)."""
    path = Path(source).expanduser()
    image_files = path.exists() and not is_packed(path) and is_image_files(path)
    return path if source not in NAMED_DATASETS and image_files else None


def _open_packed(path: Path, split: str, resolution: int | None, channels: int | None) -> PackedImages:
    """Packed data was fitted when it was packed; asking for another size or channel count is an
    error, since fitting on every read would cost each epoch what packing paid once."""
    packed = PackedImages(path)
    if split == "test":
        packed_split = packed.header.get("packed_with", {}).get("split", "?")
        raise GenforgeError(
            f"{path}: a packed dataset holds the one split it was packed from ('{packed_split}'); use split "
            "'train' or 'all', or pack the test split into a folder of its own"
        )
    _, height, width, stored = packed.shape
    if resolution is not None and (height, width) != (resolution, resolution):
        raise GenforgeError(
            f"{path}: packed at {width}x{height}, resolution {resolution} was asked; packed data is not "
            f"resized when read: pack it again with --resolution {resolution} (and --fit)"
        )
    if channels is not None and channels != stored:
        raise GenforgeError(
            f"{path}: packed with {stored} channel(s), {channels} was asked; pack it again with --channels {channels}"
        )
    return packed


def in_memory_limit() -> int:
    """Bytes of packed images load_dataset reads whole without a limit: a quarter of this
    machine's memory, so a set that would crowd out training stays on disk (2 GiB if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 2 << 30


def _materialize(packed: PackedImages, limit: int | None) -> ImageData:
    count = len(packed) if limit is None else min(limit, len(packed))
    if limit is None and packed.nbytes > in_memory_limit():
        raise GenforgeError(
            f"{packed.folder}: holds {packed.nbytes / 2**30:.1f} GiB of images, more than genforge reads into "
            f"memory ({in_memory_limit() / 2**30:.1f} GiB, a quarter of this machine's); read it lazily with "
            "genforge.data.open_dataset, or pass a limit"
        )
    labels = None if packed.labels is None else packed.labels[:count]
    return ImageData(images=packed.read(0, count), labels=labels, class_names=packed.class_names, source=packed.source)


def describe(data: ImageData | PackedImages) -> dict:
    """Summary for ``genforge data info``: sizes, class balance and pixel statistics. Pixels are
    read a chunk at a time, so a packed dataset is streamed, never loaded whole."""
    class_counts = None
    if data.labels is not None:
        counts = np.bincount(data.labels, minlength=data.num_classes or 0)
        names = data.class_names or [str(i) for i in range(len(counts))]
        class_counts = {names[i]: int(c) for i, c in enumerate(counts)}
    low, high, total = None, None, 0
    for part in data.chunks():
        low = int(part.min()) if low is None else min(low, int(part.min()))
        high = int(part.max()) if high is None else max(high, int(part.max()))
        total += int(part.sum(dtype=np.uint64))
    count, height, width, channels = data.shape
    return {
        "source": data.source,
        "count": count,
        "height": height,
        "width": width,
        "channels": channels,
        "num_classes": data.num_classes,
        "class_counts": class_counts,
        "min": low,
        "max": high,
        "mean": None if low is None else total / (count * height * width * channels),
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
