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

Where it lives: ``load.py`` (load_dataset, open_dataset, ImageData, labels_of, describe,
dataset_key), ``configured.py`` (a run's data section: load_configured, fit_note), one reader per
format (readers.py, imagefiles.py, named.py, emoji.py; result.py, what each returns),
``transforms.py`` (fitting), ``packed.py`` and ``pack.py`` (packed datasets), ``cache.py`` (the
folder cache). The names below are the public API, re-exported from there.
"""

from __future__ import annotations

from genforge.data.configured import fit_note, load_configured
from genforge.data.load import SPLITS, ImageData, dataset_key, describe, labels_of, load_dataset, open_dataset
from genforge.data.named import NAMED_DATASETS, fetch
from genforge.data.pack import pack_dataset
from genforge.data.packed import PackedImages, PackWriter, draw_batch, rank_indices
from genforge.data.transforms import FITS

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
