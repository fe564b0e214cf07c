"""``genforge reconstruct`` and ``genforge encode``: a trained VQ-VAE applied to a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.commands.registry import Command, add_device, count
from genforge.errors import GenforgeError
from genforge.families.vqvae import VQVAEModel, encode_images, reconstruct_images
from genforge.images import save_grid
from genforge.metrics.evaluate import reconstruction_metrics
from genforge.progress import SILENT, Reporter
from genforge.runfolder import atomic_path
from genforge.training.devices import pick_device


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
    reporter: Reporter = SILENT,
) -> dict[str, float]:
    """Write a grid of (original, reconstruction) pairs of the first ``n`` images (0: the whole
    split; the grid shows the first 64 pairs); return MSE/PSNR/SSIM over all ``n``."""
    if n < 0:
        raise GenforgeError(f"the number of images must be >= 0, got {n}")
    model = _model(run, device)
    d = model.data(data, split, n, reporter)
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
    reporter: Reporter = SILENT,
) -> tuple[int, tuple[int, int]]:
    """Write code indices (N, h, w) of a dataset to ``out`` (.npz: codes, labels when known)."""
    if Path(out).suffix != ".npz":
        raise GenforgeError(f"the output of encode must end in .npz, got {out}")
    if n < 0:
        raise GenforgeError(f"the number of images must be >= 0, got {n}")
    model = _model(run, device)
    d = model.data(data, split, n, reporter)
    codes = encode_images(model.vqvae, d.images, device, reporter=reporter)
    arrays = {"codes": codes, "grid": np.array(model.vqvae.grid_size), "num_codes": np.array(model.vqvae.num_codes)}
    if d.labels is not None:
        arrays["labels"] = d.labels
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return len(codes), model.vqvae.grid_size


# ---------------------------------------------------------------------------------------------
# The command line: genforge reconstruct, genforge encode
# ---------------------------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser, default_n: int) -> None:
    p.add_argument("run", type=Path, help="a VQ-VAE run folder or checkpoint")
    p.add_argument("--data", help="dataset (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"], help="which split (default test)")
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    p.add_argument("--n", type=count(0), default=default_n, help=f"images to use (0 = all; default {default_n})")
    add_device(p)


def run_reconstruct(args: argparse.Namespace) -> int:
    where = dict(data=args.data, split=args.split, device=pick_device(args.device), reporter=Reporter())
    scores = reconstruct(args.run, args.out, n=args.n, **where)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    print(f"wrote originals | reconstructions to {args.out}; {shown}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    where = dict(data=args.data, split=args.split, device=pick_device(args.device), reporter=Reporter())
    n, grid = encode(args.run, args.out, n=args.n, **where)
    print(f"wrote {n} code grids of {grid[0]}x{grid[1]} to {args.out}")
    return 0


RECONSTRUCT = Command(
    "reconstruct",
    "originals beside their VQ-VAE reconstructions",
    lambda p: _add_arguments(p, default_n=32),
    run_reconstruct,
)
ENCODE = Command("encode", "code indices of a dataset (.npz)", lambda p: _add_arguments(p, default_n=0), run_encode)
