"""``genforge sample``: images from any trained run that generates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.errors import GenforgeError
from genforge.families.registry import Interpolator, Model, Reconstructor, Sampler
from genforge.families.sampling import TunedSampling
from genforge.images import save_grid, save_png, to_uint8
from genforge.runfolder import atomic_path

FORMATS = ("png", "npz", "png-dir")


def sample(
    run: str | Path,
    n: int,
    out: str | Path,
    *,
    fmt: str = "png",
    seed: int = 0,
    nrow: int | None = None,
    interpolate: int | None = None,
    options: dict[str, Any] | None = None,
    device: torch.device = torch.device("cpu"),
) -> tuple[int, Path, str]:
    """Write ``n`` samples of ``run`` to ``out``; returns (count, path, note).

    ``options`` are the family's sampling options (truncation, class_label, temperature, ...);
    each model refuses the ones it does not take. ``interpolate`` = STEPS gives ``n`` strips of
    STEPS images walking between two latents (models that have a latent space). ``note`` says
    which sampling settings were used, for models that have tuned ones (``genforge tune``), else "".
    """
    if n <= 0:
        raise GenforgeError(f"the number of samples must be positive, got {n}")
    if nrow is not None and nrow <= 0:
        raise GenforgeError(f"images per row must be positive, got {nrow}")
    if fmt not in FORMATS:
        raise GenforgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    c = ckpt.load(run, kind=tuple(families.names()), map_location=device)
    model = families.get(c.kind).load(c, device)
    if not isinstance(model, Sampler):
        raise GenforgeError(f"{c.path}: {cannot_sample(model, c.kind)}")
    g = torch.Generator(device=device).manual_seed(seed)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if interpolate is not None:
        if not isinstance(model, Interpolator):
            raise GenforgeError("interpolation needs a model with a latent space (a GAN run)")
        images = model.interpolate(n, interpolate, g, **given)
        nrow = interpolate
    else:
        images = model.sample(n, g, **given)
    note = model.sampling_note(**given) if isinstance(model, TunedSampling) else ""
    return len(images), save_samples(to_uint8(images), out, fmt, nrow=nrow), note


def cannot_sample(model: Model, kind: str) -> str:
    """Why a model that is no ``Sampler`` gives no samples, and what would."""
    if isinstance(model, Reconstructor):
        return (
            "a VQ-VAE alone reconstructs but does not generate; train a prior on it (genforge train prior --vqvae RUN)"
        )
    return f"a {kind} run does not generate images"


def save_samples(images: np.ndarray, out: str | Path, fmt: str, nrow: int | None = None) -> Path:
    """uint8 (N, H, W, C) -> a grid PNG, an .npz (key 'images') or a folder of PNGs."""
    out = Path(out)
    if fmt == "png":
        return save_grid(images, out, nrow=nrow or max(1, math.ceil(math.sqrt(len(images)))))
    if fmt == "npz":
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images)
        return out
    if out.exists() and not out.is_dir():
        raise GenforgeError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(images):
        save_png(picture, out / f"{i:06d}.png")
    return out
