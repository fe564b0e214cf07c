"""Converting between tensors and uint8 pictures, and writing grids of them."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genforge.runfolder import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model output in [-1, 1], (B, C, H, W) -> uint8 (B, H, W, C)."""
    assert images.ndim == 4, f"expected (B, C, H, W), got {tuple(images.shape)}"
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, C) -> float in [-1, 1], (B, C, H, W) on ``device``."""
    tensor = torch.as_tensor(images, device=device)
    assert tensor.ndim == 4 and tensor.dtype == torch.uint8, (
        f"expected uint8 (B, H, W, C), got {tensor.dtype} {tuple(tensor.shape)}"
    )
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (H', W', C) picture, ``nrow`` images per row."""
    assert images.ndim == 4 and images.dtype == np.uint8, (
        f"expected uint8 (N, H, W, C), got {images.dtype} {images.shape}"
    )
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(picture: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    """Write a uint8 (H, W, C) picture as PNG atomically (temporary file, then rename)."""
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[:, :, 0]
    image = Image.fromarray(picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int = 2) -> Path:
    """uint8 (N, H, W, C) -> PNG grid at ``path``."""
    return save_png(make_grid(images, nrow), path, scale=scale)
