"""A run's data section -> its data, with the size and the fit the section left open decided
(``load_configured``) from the source's own images and the model's supported sizes, and the line
that says how (``fit_note``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from genforge.data.load import ImageData, _packed_path, load_dataset, open_dataset
from genforge.data.named import NAMED_DATASETS, read_named
from genforge.data.packed import PackedImages
from genforge.data.readers import read_path
from genforge.data.result import RaggedImages
from genforge.progress import SILENT, Reporter


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
