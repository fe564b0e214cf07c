"""Random draws through one ``torch.Generator``, on the generator's own device, then moved.

A seeded CPU generator can then drive work on any device, and a resumed run repeats its draws
bit for bit. Shared by the augmentations, the losses and the networks that draw noise (StyleGAN2,
MaskGIT's masks, the prior's class drop).

Under several processes (torchrun), a training step passes a ``Share`` where a generator goes:
each per-sample draw is then one draw for the global batch, of which this rank keeps its own
rows. Every rank draws the same global tensor from a generator that is equal on every rank, so
the generators stay equal (one checkpointed state resumes them all), no two ranks share a row,
and the ranks together draw exactly what one process with the whole batch would.
"""

from __future__ import annotations

import torch


class Share:
    """``generator``, drawing rank ``rank``'s rows of each draw for ``size`` ranks' global batch.

    A draw of shape (..., n, ...) with n at ``batch_dim`` (the local batch) is drawn as
    (..., n * size, ...) and rows rank * n .. (rank + 1) * n - 1 are kept. Only for draws with one
    entry per sample along that dimension; one process (size 1) draws as the generator alone.
    """

    __slots__ = ("generator", "rank", "size")

    def __init__(self, generator: torch.Generator, rank: int = 0, size: int = 1):
        assert 0 <= rank < size, f"rank {rank} of {size}"
        self.generator, self.rank, self.size = generator, rank, size

    @property
    def device(self) -> torch.device:
        return self.generator.device


Source = torch.Generator | Share | None


def _draw(make, shape: tuple[int, ...], source: Source, device: torch.device, batch_dim: int) -> torch.Tensor:
    if isinstance(source, Share):
        if source.size == 1:
            return _draw(make, shape, source.generator, device, batch_dim)
        n = shape[batch_dim]
        whole = list(shape)
        whole[batch_dim] = n * source.size
        out = make(tuple(whole), source.generator, source.generator.device)
        return out.narrow(batch_dim, source.rank * n, n).to(device)
    where = source.device if source is not None else device
    return make(shape, source, where).to(device)


def randn(shape: tuple[int, ...], generator: Source, device: torch.device, batch_dim: int = 0) -> torch.Tensor:
    """N(0, 1) of ``shape`` on ``device``."""
    return _draw(lambda s, g, d: torch.randn(s, generator=g, device=d), shape, generator, device, batch_dim)


def rand(shape: tuple[int, ...], generator: Source, device: torch.device, batch_dim: int = 0) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``device``."""
    return _draw(lambda s, g, d: torch.rand(s, generator=g, device=d), shape, generator, device, batch_dim)


def randint(low: int, high: int, shape: tuple[int, ...], generator: Source, device, batch_dim: int = 0) -> torch.Tensor:
    """Integers in [low, high) of ``shape`` on ``device``."""
    make = lambda s, g, d: torch.randint(low, high, s, generator=g, device=d)
    return _draw(make, shape, generator, device, batch_dim)
