"""VQ-VAE tools: reconstructions beside originals, and code indices of a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.errors import GenforgeError
from genforge.images import save_grid, to_float, to_uint8


def _load(run: str | Path, device: torch.device):
    from genforge.training.prior import load_vqvae

    return load_vqvae(ckpt.load(run, kind="vqvae", map_location=device), device)


def _data(cfg, data: str | None, split: str, n: int):
    from dataclasses import replace

    from genforge.training.runs import load_data

    data_cfg = replace(cfg.data, source=data) if data else cfg.data
    return load_data(replace(data_cfg, limit=n or 0), split=split)


@torch.no_grad()
def reconstruct_images(model, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 reconstructions of the same shape."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        out.append(to_uint8(model(x)[0].float().clamp(-1, 1)))
    return np.concatenate(out)


def reconstruct(
    run, out: Path, *, data: str | None = None, split: str = "test", n: int = 32, device=torch.device("cpu")
) -> dict[str, float]:
    """Write a grid of (original, reconstruction) pairs; return MSE/PSNR/SSIM on those images."""
    from genforge.metrics.evaluate import reconstruction_metrics

    model, cfg = _load(run, device)
    d = _data(cfg, data, split, n)
    recon = reconstruct_images(model, d.images, device)
    pairs = np.stack([d.images[:64], recon[:64]], 1).reshape(-1, *d.images.shape[1:])
    save_grid(pairs, out, nrow=16)
    return reconstruction_metrics(d.images, recon)


@torch.no_grad()
def encode(
    run, out: Path, *, data: str | None = None, split: str = "train", n: int = 0, device=torch.device("cpu")
) -> tuple[int, tuple[int, int]]:
    """Write code indices (N, h, w) of a dataset to ``out`` (.npz: codes, labels when known)."""
    from genforge.training.prior import encode_images

    if Path(out).suffix != ".npz":
        raise GenforgeError(f"--out for encode must end in .npz, got {out}")
    model, cfg = _load(run, device)
    d = _data(cfg, data, split, n)
    codes = encode_images(model, d.images, device)
    arrays = {"codes": codes, "grid": np.array(model.grid_size), "num_codes": np.array(model.num_codes)}
    if d.labels is not None:
        arrays["labels"] = d.labels
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return len(codes), model.grid_size
