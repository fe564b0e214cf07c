"""Batches for the training loop: a pure function of (seed, step, rank), so resuming needs no state.

Batch number ``b`` is slice ``b % per_epoch`` of the permutation seeded by (seed, epoch); under
several processes each rank takes its own contiguous part of that global batch. Examples come
from a uint8 tensor on the device (small data, today's default) or from a packed dataset read
batch by batch (data larger than memory: only the batch's images are read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genforge.data import ImageData
from genforge.training.distributed import check_batch


@dataclass
class Batches:
    examples: Any  # uint8 (N, H, W, C) images or integer (N, h, w) code grids, as a tensor on the device,
    #                 or a packed dataset with ``take(indices) -> np.ndarray`` (read per batch)
    labels: torch.Tensor | None  # int64 (N,) on the device
    batch_size: int  # the global batch, over all ranks
    seed: int
    device: torch.device = torch.device("cpu")
    channels_last: bool = False
    per_step: int = 1  # batches each step consumes (a GAN's d_steps: one real batch per D update)
    rank: int = 0
    world_size: int = 1
    _epoch: int = field(default=-1, repr=False)
    _perm: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        check_batch(len(self.examples), self.batch_size, self.world_size)
        self.per_epoch = max(1, len(self.examples) // self.batch_size)
        self.local = self.batch_size // self.world_size

    def indices(self, number: int) -> torch.Tensor:
        """The example indices of global batch ``number`` that belong to this rank."""
        epoch, slot = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.examples), generator=g)
            self._epoch = epoch
        start = slot * self.batch_size + self.rank * self.local
        return self._perm[start : start + self.local]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's examples of step ``step``: ``per_step`` batches, one after another."""
        index = torch.cat([self.indices(step * self.per_step + i) for i in range(self.per_step)])
        y = self.labels[index.to(self.labels.device)] if self.labels is not None else None
        if isinstance(self.examples, torch.Tensor):
            x = self.examples[index.to(self.examples.device)]
        else:  # packed: read just these images, in index order
            x = torch.from_numpy(np.ascontiguousarray(self.examples.take(index.numpy()))).to(self.device)
        if x.dtype != torch.uint8:  # code grids for priors: (B, h, w) integers, as they are
            return x.long(), y
        x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, C, H, W) in [-1, 1]
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x, y


def on_device(examples: Any, device: torch.device) -> Any:
    """In-memory arrays (or an in-memory dataset's images) go to the device once; packed datasets
    stay on disk, read batch by batch."""
    if isinstance(examples, ImageData):
        examples = examples.images
    if isinstance(examples, np.ndarray):
        return torch.from_numpy(examples).to(device)
    return examples
