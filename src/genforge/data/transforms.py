"""Resolution fitting and channel conversion on uint8 (N, H, W, C) arrays, done once at load time.

Work is vectorised over all images of one size (images of mixed sizes are grouped by size),
and chunked so that float copies of a large dataset never sit in memory all at once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genforge.data.result import Images, RaggedImages
from genforge.errors import GenforgeError

FITS = ("none", "resize", "center-crop", "pad")
CHANNELS = (None, 1, 3)
_CHUNK = 4096  # images per float chunk: 4096 x 3 x 256 x 256 x 4 bytes = 3 GiB at worst, 50 MiB for 64x64


def check_options(resolution: int | None, fit: str, channels: int | None) -> None:
    """Validate the options before anything is read, so bad flags fail at once."""
    if fit not in FITS:
        raise GenforgeError(f"unknown fit '{fit}'; choose one of {', '.join(FITS)}")
    if channels not in CHANNELS or isinstance(channels, bool):
        raise GenforgeError(
            f"channels must be 1 (grey) or 3 (RGB), or left unset to keep the source's; got {channels!r}"
        )
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0):
        raise GenforgeError(f"resolution must be a positive integer, got {resolution!r}")
    if fit != "none" and resolution is None:
        raise GenforgeError(f"fit '{fit}' needs a resolution to fit to; pass one (e.g. --resolution 32)")


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"  # width x height, as image viewers print it


def fit_images(images: Images, resolution: int | None, fit: str) -> np.ndarray:
    """uint8 (N, H, W, C) or RaggedImages -> uint8 (N, R, R, C) (or unchanged for fit 'none')."""
    check_options(resolution, fit, None)
    if isinstance(images, RaggedImages):
        if fit == "none":
            sizes = [im.shape[:2] for im in images]
            other = next(i for i, s in enumerate(sizes) if s != sizes[0])
            raise GenforgeError(
                f"images differ in size ({images.names[0]} is {_size(sizes[0])}, {images.names[other]} is "
                f"{_size(sizes[other])}); pass a resolution and fit 'resize', 'center-crop' or 'pad' (--set data.fit=...)"
            )
        return _fit_ragged(images, resolution, fit)
    assert images.ndim == 4 and images.dtype == np.uint8, (
        f"expected uint8 (N, H, W, C), got {images.dtype} {images.shape}"
    )
    _, height, width, _ = images.shape
    if fit == "none":
        if resolution is not None and (height, width) != (resolution, resolution):
            raise GenforgeError(
                f"images are {width}x{height} but resolution {resolution} was asked; "
                f"pass fit 'resize', 'center-crop' or 'pad' (--set data.fit=...)"
            )
        return images
    if fit == "resize":
        return resize(images, resolution)
    if fit == "center-crop":
        return resize(center_crop(images), resolution)
    return pad(images, resolution)


def _fit_ragged(images: RaggedImages, resolution: int, fit: str) -> np.ndarray:
    """Group by size so each group is fitted as one array; output keeps the input order."""
    out = np.empty((len(images), resolution, resolution, images[0].shape[2]), np.uint8)  # (N, R, R, C)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    for indices in groups.values():
        try:
            out[indices] = fit_images(np.stack([images[i] for i in indices]), resolution, fit)
        except GenforgeError as error:  # name a file, not an anonymous group
            raise GenforgeError(f"{images.names[indices[0]]}: {error}") from None
    return out


def resize(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, R, R, C), bilinear with antialiasing (a box-like average when
    shrinking, as PIL does), rounded back to uint8. Same size in, same array out."""
    n, height, width, channels = images.shape
    if (height, width) == (resolution, resolution):
        return images
    out = np.empty((n, resolution, resolution, channels), np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + _CHUNK])).permute(0, 3, 1, 2).float()
        chunk = F.interpolate(
            chunk, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + _CHUNK] = chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def center_crop(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> the largest centred square (N, S, S, C), S = min(H, W)."""
    _, height, width, _ = images.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[:, top : top + side, left : left + side]


def pad(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, R, R, C), centred on zeros (the extra pixel, if odd, goes below/right)."""
    n, height, width, channels = images.shape
    if height > resolution or width > resolution:
        raise GenforgeError(
            f"images of {width}x{height} are larger than resolution {resolution}; "
            f"fit 'pad' only grows images, use 'resize' or 'center-crop'"
        )
    out = np.zeros((n, resolution, resolution, channels), np.uint8)
    top, left = (resolution - height) // 2, (resolution - width) // 2
    out[:, top : top + height, left : left + width] = images
    return out


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, H, W, channels). 3 -> 1 is ITU-R 601 luma with PIL's fixed-point
    weights, so it matches ``Image.convert('L')`` exactly; 1 -> 3 repeats the grey plane."""
    check_options(None, "none", channels)
    if channels is None or images.shape[3] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=3)
    n, height, width, _ = images.shape
    out = np.empty((n, height, width, 1), np.uint8)
    weights = np.array([19595, 38470, 7471], np.uint32)  # 0.299, 0.587, 0.114 times 2**16
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK].astype(np.uint32)  # (n, H, W, 3)
        out[start : start + _CHUNK, ..., 0] = ((chunk @ weights + 0x8000) >> 16).astype(np.uint8)
    return out
