"""Batches for the training loop: a pure function of (seed, step, rank), so resuming needs no state.

Batch number ``b`` is slice ``b % per_epoch`` of the permutation seeded by (seed, epoch); under
several processes each rank takes its own contiguous part of that global batch. Examples come
from a uint8 tensor on the device (data under ``DEVICE_BYTES``, an image folder's cache
included: read whole once, in one sequential read for a packed dataset, and indexed there) or
from host memory or a packed dataset larger than that (only the batch's images are read). Host batches are read ahead of the model by one
background thread, in step order, into pinned memory on CUDA and copied with ``non_blocking``;
since a batch is a function of its step alone, reading ahead changes no batch, and a resumed
run reads exactly what the interrupted one would have.

A thread, not DataLoader workers: reading a batch is positioned reads and a gather, which release
the GIL (the decoding happened once, into the cache), and a thread costs no process start-up per
session nor a fork beside CUDA.

``mirror`` flips each real image left-right with probability 0.5 when it is drawn (stylegan2-ada's
``--mirror``): the coin of image ``i`` of global batch ``b`` is a function of (seed, b, i) alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genforge.data import ImageData, PackedImages
from genforge.training.distributed import check_batch

DEVICE_BYTES = 1 << 30  # in-memory data up to 1 GiB lives on the accelerator; larger stays on the host
AHEAD = 2  # host batches prepared ahead of the model (each a step of time ahead; a float batch on the CPU)
_MIRROR_STREAM = 0x6D6972  # keeps the mirror's coins apart from every other use of the seed


@dataclass
class Batches:
    examples: Any  # uint8 (N, H, W, C) images or integer (N, h, w) code grids: a tensor (indexed where it
    #                 lies), a host array, or a packed dataset with ``take(indices) -> np.ndarray``
    labels: torch.Tensor | None  # int64 (N,) on the device
    batch_size: int  # the global batch, over all ranks
    seed: int
    device: torch.device = torch.device("cpu")
    channels_last: bool = False
    per_step: int = 1  # batches each step consumes (a GAN's d_steps: one real batch per D update)
    rank: int = 0
    world_size: int = 1
    mirror: bool = False  # x-flip each real image with probability 0.5 (images only, not code grids)
    ahead: int = AHEAD  # host batches read ahead by a background thread (0: read when asked)
    _epoch: int = field(default=-1, repr=False)
    _perm: torch.Tensor | None = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)
    _reader: _ReadAhead | None = field(default=None, repr=False)

    def __post_init__(self):
        check_batch(len(self.examples), self.batch_size, self.world_size)
        self.per_epoch = max(1, len(self.examples) // self.batch_size)
        self.local = self.batch_size // self.world_size

    def indices(self, number: int) -> torch.Tensor:
        """The example indices of global batch ``number`` that belong to this rank."""
        epoch, slot = divmod(number, self.per_epoch)
        with self._lock:  # the read-ahead thread and the loop share the cached permutation
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm = torch.randperm(len(self.examples), generator=g)
                self._epoch = epoch
            perm = self._perm
        start = slot * self.batch_size + self.rank * self.local
        return perm[start : start + self.local]

    def flips(self, number: int) -> np.ndarray:
        """bool (local,): which of this rank's images of global batch ``number`` are mirrored."""
        coins = np.random.default_rng([self.seed, number, _MIRROR_STREAM]).random(self.batch_size) < 0.5
        return coins[self.rank * self.local : (self.rank + 1) * self.local]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's examples of step ``step``: ``per_step`` batches, one after another."""
        done = False
        if isinstance(self.examples, torch.Tensor):  # on the device already: indexed there
            index, flips = self._choose(step, self.per_step)
            x = self.examples[index.to(self.examples.device)].to(self.device, non_blocking=True)
        else:  # prepared by the read-ahead thread: on the CPU completely, else up to the copy
            index, flips, x, done = self._read(step)
            x = x if done else x.to(self.device, non_blocking=True)
        y = self.labels[index.to(self.labels.device)] if self.labels is not None else None
        return x if done else self._prepare(x, flips), y

    def _prepare(self, x: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float (B, C, H, W) in [-1, 1], mirrored where ``flips`` says;
        code grids (B, h, w) -> long, as they are."""
        if x.dtype != torch.uint8:
            return x.long()
        if flips is not None:  # (B, H, W, C): W is dim 2
            flips = flips.to(x.device, non_blocking=True)[:, None, None, None]
            x = torch.where(flips, x.flip(2), x)
        x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, C, H, W) in [-1, 1]
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _choose(self, step: int, per_step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The indices of step ``step`` and, with ``mirror``, its flips as a bool tensor."""
        numbers = range(step * per_step, (step + 1) * per_step)
        indices = [self.indices(n) for n in numbers]
        index = torch.cat(indices)
        if not self.mirror:
            return index, None
        # data smaller than a batch gives shorter batches: each image keeps the coin of its place
        flips = np.concatenate([self.flips(n)[: len(i)] for n, i in zip(numbers, indices)])
        return index, torch.from_numpy(flips)

    def _host_batch(self, step: int, per_step: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, bool]:
        """Indices, flips and the examples of a step read from host memory or disk (in the thread),
        and whether the examples are ready for the model (on the CPU they are)."""
        index, flips = self._choose(step, per_step)
        rows = index.numpy()
        taken = self.examples[rows] if isinstance(self.examples, np.ndarray) else self.examples.take(rows)
        x = torch.from_numpy(np.ascontiguousarray(taken))
        if self.device.type == "cpu":  # the conversion too runs beside the model's step
            return index, None, self._prepare(x, flips), True
        if self.device.type == "cuda":  # pinned: the copy to the GPU runs beside the model, and
            x = x.pin_memory()  # uint8 is a quarter of the bytes: the conversion is done there
            flips = None if flips is None else flips.pin_memory()
        return index, flips, x, False

    def _read(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, bool]:
        if self.ahead <= 0:
            return self._host_batch(step, self.per_step)
        if self._reader is None or self._reader.next != (step, self.per_step) or self._reader.key != self._key():
            self.close()  # asked out of order, or the probe changed a setting: start again from here
            self._reader = _ReadAhead(self._host_batch, step, self.per_step, self.ahead)
            self._reader.key = self._key()
        return self._reader.take()

    def _key(self) -> tuple:
        """The settings a prepared batch depends on besides its step (changed by the precision probe)."""
        return self.channels_last, self.mirror, self.device

    def close(self) -> None:
        """Stop the read-ahead thread (get() starts another if asked again)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


class _ReadAhead:
    """Prepares ``make(step, per_step)`` for step ``start``, ``start + 1``, ... in a background
    thread, at most ``depth`` ahead; ``take()`` answers them in order. An error in the thread is
    raised by the ``take()`` of the step that hit it."""

    def __init__(self, make: Callable[[int, int], Any], start: int, per_step: int, depth: int):
        self.next = (start, per_step)
        self.key: tuple = ()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(make, start, per_step), name="genforge-batches", daemon=True
        )
        self._thread.start()

    def _work(self, make: Callable[[int, int], Any], step: int, per_step: int) -> None:
        while not self._stop.is_set():
            try:
                item = (make(step, per_step), None)
            except BaseException as error:  # handed to the loop, which raises it
                item = (None, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return
            step += 1

    def take(self) -> Any:
        batch, error = self._queue.get()
        if error is not None:
            self.next = (-1, -1)  # the next get() starts a fresh reader
            raise error
        self.next = (self.next[0] + 1, self.next[1])
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def on_device(examples: Any, device: torch.device) -> Any:
    """In-memory arrays (or an in-memory dataset's images) go to the device once when they are
    small (under DEVICE_BYTES; on the CPU they are used where they lie); larger ones stay in host
    memory, read batch by batch ahead of the model. A packed dataset (an image folder's cache)
    under DEVICE_BYTES is read whole, in one sequential read, and then goes where in-memory data
    goes: training from a folder then runs as from the same images in memory, where gathering
    each batch from the file cost a small model 5-21% of its images/s on 2 CPU cores
    (benchmarks/folder_start.py). Larger packed datasets stay on disk."""
    if isinstance(examples, ImageData):
        examples = examples.images
    if isinstance(examples, PackedImages) and int(np.prod(examples.shape)) <= DEVICE_BYTES:
        examples = examples.read(0, len(examples))
    if isinstance(examples, np.ndarray) and (device.type == "cpu" or examples.nbytes <= DEVICE_BYTES):
        return torch.from_numpy(examples).to(device)
    return examples
