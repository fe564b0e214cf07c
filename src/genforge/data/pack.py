"""pack_dataset: any source genforge reads -> a packed dataset (packed.py), written in chunks.

Image folders and zips are decoded ``chunk`` files at a time and packed datasets read a chunk at
a time, so neither sits in memory whole; IDX, CIFAR, .npz and the named datasets are read whole
(as load_dataset does; they come as single arrays) and fitted and written in chunks. Fitting and
channel conversion happen here, once: packed data is never resized when it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from genforge.data.imagefiles import ImageFiles, list_image_files, same_channels, stack
from genforge.data.named import NAMED_DATASETS, read_named
from genforge.data.packed import PackedImages, PackWriter, check_replaceable, is_packed
from genforge.data.readers import is_image_files, read_path, require_whole
from genforge.data.result import Images, RaggedImages
from genforge.data.transforms import check_options, convert_channels, fit_images
from genforge.errors import GenforgeError

SPLITS = ("train", "test", "all")
Chunk = tuple[Images, np.ndarray | None, str]  # images, their labels, a name for messages


def pack_dataset(
    source: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    resolution: int | None = None,
    fit: str = "none",
    channels: int | None = None,
    chunk: int = 1024,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Pack ``source``'s ``split`` into the folder ``out``, fitted to ``resolution`` (fit: none |
    resize | center-crop | pad) and converted to ``channels``, ``chunk`` images at a time.
    ``progress(done, total)`` is called after each chunk. Returns the writer's summary:
    {"out", "count", "shape": [N, H, W, C], "labelled", "num_classes", "bytes"}."""
    source = str(source)
    if split not in SPLITS:
        raise GenforgeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise GenforgeError(f"chunk must be a positive number of images, got {chunk!r}")
    check_options(resolution, fit, channels)
    out = Path(out).expanduser()
    check_replaceable(out, overwrite)  # before reading anything: packing can take hours
    options = {"split": split, "resolution": resolution, "fit": fit, "channels": channels}
    path = Path(source).expanduser()
    if source in NAMED_DATASETS:
        (images, labels, class_names), _ = read_named(source, split)
        chunks, total = _array_chunks(images, labels, source, chunk), len(images)
    elif not path.exists():
        raise GenforgeError(f"{path}: no such file or folder")
    elif is_packed(path):
        require_whole(path, split)
        packed = PackedImages(path)
        class_names, total = packed.class_names, len(packed)
        chunks = _packed_chunks(packed, chunk)
    elif is_image_files(path):
        require_whole(path, split)
        with list_image_files(path) as files:
            return pack_files(files, out, options, source=source, chunk=chunk, overwrite=overwrite, progress=progress)
    else:
        images, labels, class_names = read_path(path, split)
        chunks, total = _array_chunks(images, labels, source, chunk), len(images)
    return _write(chunks, out, class_names, total, source, options, overwrite, progress)


def pack_files(
    files: ImageFiles,
    out: Path,
    options: dict,
    *,
    source: str,
    chunk: int = 1024,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Decode a listed image folder or zip ``chunk`` files at a time into the packed dataset
    ``out``; ``options`` holds split, resolution, fit and channels (the folder cache calls this
    too, with its own list of files)."""
    # without a channel count asked for, a colour image anywhere makes the whole set RGB
    colour = options["channels"] is None and files.colour()
    chunks = _file_chunks(files, colour, chunk)
    return _write(chunks, out, files.class_names, len(files), source, options, overwrite, progress)


def _write(
    chunks: Iterator[Chunk],
    out: Path,
    class_names: list[str] | None,
    total: int,
    source: str,
    options: dict,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
) -> dict:
    """Fit each chunk, check it matches the first, append; on any error nothing is left at ``out``."""
    resolution, fit, channels = options["resolution"], options["fit"], options["channels"]
    writer = None
    try:
        for images, labels, name in chunks:
            fitted = convert_channels(fit_images(images, resolution, fit), channels)  # (n, H, W, C)
            if writer is None:
                names = class_names if labels is not None else None
                writer = PackWriter(
                    out, *fitted.shape[1:], names, source=source, packed_with=options, overwrite=overwrite
                )
            elif fitted.shape[1:] != writer.image_shape:
                height, width, _ = writer.image_shape
                raise GenforgeError(
                    f"{name}: is {fitted.shape[2]}x{fitted.shape[1]} but the images before it are {width}x{height}; "
                    f"pass a resolution and fit 'resize', 'center-crop' or 'pad' (--fit)"
                )
            writer.append(fitted, labels)
            if progress is not None:
                progress(writer.count, total)
        if writer is None:
            raise GenforgeError(f"{source}: holds no images for split '{options['split']}'")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _array_chunks(images: Images, labels: np.ndarray | None, source: str, chunk: int) -> Iterator[Chunk]:
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if isinstance(images, RaggedImages):  # a slice may be all one size: let stack decide
            part = stack(part, images.names[start : start + chunk])
        yield part, None if labels is None else labels[start : start + chunk], f"{source}: image {start}"


def _packed_chunks(packed: PackedImages, chunk: int) -> Iterator[Chunk]:
    start = 0
    for part in packed.chunks(max_bytes=chunk * packed.image_bytes):
        labels = None if packed.labels is None else packed.labels[start : start + len(part)]
        yield part, labels, f"{packed.folder}: image {start}"
        start += len(part)


def _file_chunks(files: ImageFiles, colour: bool, chunk: int) -> Iterator[Chunk]:
    for start in range(0, len(files), chunk):
        stop = min(start + chunk, len(files))
        pictures = [files.decode(i) for i in range(start, stop)]
        # grey joins RGB in a chunk with colour in it; with a channel count asked for, grey ->
        # RGB -> grey is exact, so this equals converting the whole set at once
        pictures = same_channels(pictures, colour or any(p.shape[2] == 3 for p in pictures))
        labels = None if files.labels is None else files.labels[start:stop]
        yield stack(pictures, files.names[start:stop]), labels, files.names[start]
