"""The data layer: any supported source -> one in-memory uint8 (N, H, W, C) array with labels,
or, for a packed dataset larger than memory, a handle that reads batches from disk.

    data = load_dataset("fashion-mnist", split="train", resolution=32, fit="pad")
    data.images  # uint8 (60000, 32, 32, 1)
    pack_dataset("photos/", "photos.packed", resolution=64, fit="center-crop")
    data = open_dataset("photos.packed")  # PackedImages: nothing read yet
    batch = data.take(draw_batch(len(data), 64, seed=0, step=step, rank=rank, world_size=world))

Sources: a named dataset (see NAMED_DATASETS; a bare name wins over a folder of that name in the
working directory, write ./mnist for the folder) or a path: image folder or .zip (class
sub-folders give labels), IDX files of the MNIST family, CIFAR-10/100 python batches (folder or
.tar.gz), .npz, or a packed dataset. Fitting and channel conversion happen once here (or once
when packing), never in the training loop. An image folder or zip is decoded once into a packed
cache under genforge's cache root (data/cache.py), which later loads read.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genforge.data.cache import cached_images
from genforge.data.imagefiles import list_image_files
from genforge.data.named import NAMED_DATASETS, fetch, read_named
from genforge.data.pack import pack_dataset
from genforge.data.packed import CHUNK_BYTES, PackedImages, PackWriter, draw_batch, is_packed, rank_indices
from genforge.data.readers import is_image_files, read_path
from genforge.data.result import RaggedImages
from genforge.data.transforms import FITS, check_options, convert_channels, fit_images
from genforge.errors import GenforgeError
from genforge.progress import SILENT, Reporter

SPLITS = ("train", "test", "all")

__all__ = [
    "FITS",
    "NAMED_DATASETS",
    "SPLITS",
    "ImageData",
    "PackWriter",
    "PackedImages",
    "dataset_key",
    "describe",
    "draw_batch",
    "fetch",
    "fit_note",
    "labels_of",
    "load_configured",
    "load_dataset",
    "open_dataset",
    "pack_dataset",
    "rank_indices",
]


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


def load_configured(
    cfg, split: str = "train", nearest=None, lazy: bool = False, reporter: Reporter = SILENT
) -> tuple[ImageData | PackedImages, object]:
    """A run's data section -> (the images, the section with resolution and fit made concrete).

    ``cfg`` is a ``config.DataConfig``. With ``resolution`` 0 the images keep their own size, or,
    when ``nearest`` (a model's ``side -> supported side``) is given, go to the nearest size the
    model supports; a named dataset may prefer its own (Fashion-MNIST: 32, padded). ``fit`` "auto"
    centre-crops and resizes the images of a folder or zip that mixes sizes, and otherwise
    resizes square images and centre-crops others. The returned section is what the run records,
    so resuming and evaluating load exactly the same pixels. ``lazy`` returns a packed dataset as
    a handle that reads batches from disk (see ``open_dataset``). ``reporter`` shows the first
    decoding of an image folder into its cache.
    """
    resolution, fit = cfg.resolution, cfg.fit
    if resolution == 0 or fit == "auto":
        named = NAMED_DATASETS.get(str(cfg.source))
        preferred = named.preferred_fit if named is not None else None
        if resolution == 0 and preferred is not None:
            resolution = preferred[0]
        sizes = None if preferred is not None else _native_sizes(cfg.source, split)  # read once: it lists a folder
        native = None if sizes is None else _native_size(cfg.source, split, sizes)
        if resolution == 0:
            height, width = native
            side = min(height, width)
            resolution = nearest(side) if nearest is not None else side
        if fit == "auto":
            if preferred is not None and resolution == preferred[0]:
                fit = preferred[1]
            else:
                sizes = sizes or _native_sizes(cfg.source, split)
                native = _native_size(cfg.source, split, sizes)
                if len(set(sizes)) > 1:
                    # a folder or zip of the user's own images may mix sizes and shapes: every image
                    # is centre-cropped to a square and resized (no-ops for images already that size)
                    fit = "center-crop"
                else:
                    fit = (
                        "none"
                        if native == (resolution, resolution)
                        else "resize"
                        if native[0] == native[1]
                        else "center-crop"
                    )
    read = open_dataset if lazy else load_dataset
    data = read(
        cfg.source,
        split=split,
        resolution=resolution,
        fit=fit,
        channels=cfg.channels or None,
        limit=cfg.limit or None,
        reporter=reporter,
    )
    return data, replace(cfg, resolution=resolution, fit=fit)


def fit_note(asked, chosen, split: str = "train") -> str | None:
    """One line saying how the data was fitted when the run left the size or the fit to genforge,
    e.g. "data: 60x60 -> 64x64 (resize), the nearest size the model supports" ("as asked" for a
    given resolution); None otherwise."""
    if asked.resolution and asked.fit != "auto":
        return None
    height, width = _native_size(chosen.source, split)
    if (height, width) == (chosen.resolution, chosen.resolution):
        return None
    why = "as asked" if asked.resolution else "the nearest size the model supports"
    return f"data: {width}x{height} -> {chosen.resolution}x{chosen.resolution} ({chosen.fit}), {why}"


def labels_of(source: str, split: str = "train") -> np.ndarray | None:
    """The labels of a source's split (None: unlabelled); an image folder or zip is only listed
    (its class sub-folders are its labels), not decoded, so images of mixed sizes are no obstacle."""
    if (files := _image_files_path(str(source))) is not None:
        with list_image_files(files) as listed:
            return listed.labels
    return load_dataset(source, split=split).labels


def _native_sizes(source: str, split: str) -> list[tuple[int, int]]:
    """(height, width) of a source's images: every size among the first 64 of an image folder or
    zip (they may differ), the one size of any other source."""
    if (packed := _packed_path(str(source))) is not None:
        return [PackedImages(packed).shape[1:3]]
    if str(source) in NAMED_DATASETS:
        (images, _, _), _ = read_named(str(source), split)
    else:
        images, _, _ = read_path(Path(source).expanduser(), split, 64)
    if isinstance(images, RaggedImages):
        return [im.shape[:2] for im in images]
    return [(images.shape[1], images.shape[2])]


def _native_size(source: str, split: str, sizes: list[tuple[int, int]] | None = None) -> tuple[int, int]:
    """(height, width) of a source's images (the most common size in a mixed folder)."""
    sizes = sizes or _native_sizes(source, split)
    return max(set(sizes), key=sizes.count)


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
