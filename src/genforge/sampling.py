"""Sampling from trained runs: GAN latents (truncation, interpolation) and code priors.

``load_sampler(run)`` rebuilds whatever the checkpoint holds from the file alone and returns an
object with ``sample(n, generator, **options) -> (n, C, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import from_dict
from genforge.errors import GenforgeError


def truncated_normal(n: int, dim: int, truncation: float | None, generator: torch.Generator, device) -> torch.Tensor:
    """N(0, I) latents; with ``truncation`` t, entries with |z| > t are redrawn (BigGAN's trick)."""
    z = torch.randn(n, dim, device=device, generator=generator)
    if truncation is None:
        return z
    if truncation <= 0:
        raise GenforgeError(f"--truncation must be positive, got {truncation}")
    for _ in range(1000):
        outside = z.abs() > truncation
        if not outside.any():
            break
        z = torch.where(outside, torch.randn(z.shape, device=device, generator=generator), z)
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b (B, D) at fractions t (K,) -> (B, K, D)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1)
    so = torch.sin(omega)
    t = t[None, :]  # (1, K)
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    return wa[..., None] * a[:, None] + wb[..., None] * b[:, None]


class GANSampler:
    kind = "gan"

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        from genforge.training.gan import GANFamily, GANRunConfig

        cfg = from_dict(GANRunConfig, c.config)
        cfg.train.compile = False
        cfg.train.channels_last = False
        self.family = GANFamily(cfg, device)
        for name, module in self.family.modules().items():
            ckpt.unpack_module(f"model.{name}", module, c.tensors)
        self.net = self.family.sampler.eval()
        self.device = device
        self.config = cfg
        self.step = c.step

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator, truncation: float | None = None, **unused: Any
    ) -> torch.Tensor:
        _refuse(unused, "a GAN")
        z = truncated_normal(n, self.config.model.z_dim, truncation, generator, self.device)
        return torch.cat([self.net(chunk).float() for chunk in z.split(256)])

    @torch.no_grad()
    def interpolate(
        self, rows: int, steps: int, generator: torch.Generator, truncation: float | None = None
    ) -> torch.Tensor:
        """``rows`` strips of ``steps`` images each, walking between two random latents."""
        if steps < 2:
            raise GenforgeError(f"--interpolate needs at least 2 steps, got {steps}")
        dim = self.config.model.z_dim
        a = truncated_normal(rows, dim, truncation, generator, self.device)
        b = truncated_normal(rows, dim, truncation, generator, self.device)
        z = slerp(a, b, torch.linspace(0, 1, steps, device=self.device)).reshape(rows * steps, dim)
        return self.net(z).float()


def _refuse(options: dict[str, Any], what: str) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise GenforgeError(f"--{given[0].replace('_', '-')} does not apply to {what} run")


def load_sampler(run: str | Path, device: torch.device):
    """A run folder or checkpoint -> a sampler for it (GAN or prior)."""
    c = ckpt.load(run, kind=("gan", "prior", "vqvae"), map_location=device)
    if c.kind == "gan":
        return GANSampler(c, device)
    if c.kind == "prior":
        from genforge.training.prior import PriorSampler

        return PriorSampler(c, device)
    raise GenforgeError(
        f"{c.path}: a VQ-VAE alone reconstructs but does not generate; train a prior on it (genforge train prior --vqvae RUN)"
    )


def save_samples(images: np.ndarray, out: Path, fmt: str, nrow: int | None = None) -> Path:
    """uint8 (N, H, W, C) -> a grid PNG, an .npz (key 'images') or a folder of PNGs."""
    from genforge.images import save_grid, save_png

    out = Path(out)
    if fmt == "png":
        return save_grid(images, out, nrow=nrow or max(1, math.ceil(math.sqrt(len(images)))))
    if fmt == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.npz")
        np.savez_compressed(tmp, images=images)
        tmp.replace(out)
        return out
    if fmt == "png-dir":
        out.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(images):
            save_png(picture, out / f"{i:06d}.png")
        return out
    raise GenforgeError(f"--format must be png, npz or png-dir, got {fmt!r}")
