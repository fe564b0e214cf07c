"""Random draws through one ``torch.Generator``, on the generator's own device, then moved.

A seeded CPU generator can then drive work on any device, and a resumed run repeats its draws
bit for bit. Shared by the augmentations and the networks that draw noise (StyleGAN2).
"""

from __future__ import annotations

import torch


def _source(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, 1) of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=_source(generator, device)).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``device``."""
    return torch.rand(shape, generator=generator, device=_source(generator, device)).to(device)


def randint(low: int, high: int, shape: tuple[int, ...], generator, device: torch.device) -> torch.Tensor:
    """Integers in [low, high) of ``shape`` on ``device``."""
    return torch.randint(low, high, shape, generator=generator, device=_source(generator, device)).to(device)
