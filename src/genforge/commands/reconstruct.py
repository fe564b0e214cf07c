"""``genforge reconstruct`` and ``genforge encode``: a trained VQ-VAE applied to a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.errors import GenforgeError
from genforge.families.vqvae import VQVAEModel, encode_images, reconstruct_images
from genforge.images import save_grid
from genforge.metrics.evaluate import reconstruction_metrics
from genforge.runfolder import atomic_path


def _model(run: str | Path, device: torch.device) -> VQVAEModel:
    return VQVAEModel(ckpt.load(run, kind="vqvae", map_location=device), device)


def reconstruct(
    run: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    n: int = 32,
    device: torch.device = torch.device("cpu"),
) -> dict[str, float]:
    """Write a grid of (original, reconstruction) pairs of the first ``n`` images (0: the whole
    split; the grid shows the first 64 pairs); return MSE/PSNR/SSIM over all ``n``."""
    if n < 0:
        raise GenforgeError(f"the number of images must be >= 0, got {n}")
    model = _model(run, device)
    d = model.data(data, split, n)
    recon = reconstruct_images(model, d.images, device)
    pairs = np.stack([d.images[:64], recon[:64]], 1).reshape(-1, *d.images.shape[1:])
    save_grid(pairs, out, nrow=16)
    return reconstruction_metrics(d.images, recon)


@torch.no_grad()
def encode(
    run: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    split: str = "train",
    n: int = 0,
    device: torch.device = torch.device("cpu"),
) -> tuple[int, tuple[int, int]]:
    """Write code indices (N, h, w) of a dataset to ``out`` (.npz: codes, labels when known)."""
    if Path(out).suffix != ".npz":
        raise GenforgeError(f"the output of encode must end in .npz, got {out}")
    if n < 0:
        raise GenforgeError(f"the number of images must be >= 0, got {n}")
    model = _model(run, device)
    d = model.data(data, split, n)
    codes = encode_images(model.vqvae, d.images, device)
    arrays = {"codes": codes, "grid": np.array(model.vqvae.grid_size), "num_codes": np.array(model.vqvae.num_codes)}
    if d.labels is not None:
        arrays["labels"] = d.labels
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return len(codes), model.vqvae.grid_size
