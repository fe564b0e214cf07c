"""Several processes, one run: torchrun's environment, the process group, rank-0 I/O.

genforge uses PyTorch's own engine and adds no layer of its own::

    torchrun --nproc-per-node K -m genforge train gan --data D --out runs/gan

``torchrun`` starts K processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; ``session`` joins them into one process group (gloo on CPU, NCCL on CUDA, with a
timeout, so a rank that stops answering ends the job instead of hanging it); ``ddp.step_module`` wraps the
modules a training step calls in DistributedDataParallel, which averages their gradients over the
ranks during backward. Everything else (which rank writes, who waits for whom) is the training
loop's, using ``barrier``, ``from_main`` and ``average`` here.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from genforge import draws
from genforge.draws import Share
from genforge.errors import GenforgeError


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes of one run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this machine: picks the GPU

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"


def from_environment(environ: dict[str, str] | None = None) -> World:
    """The World torchrun describes in the environment (no WORLD_SIZE: one process)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise GenforgeError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes with torchrun"
        ) from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise GenforgeError(f"RANK {rank} does not fit WORLD_SIZE {size}; start several processes with torchrun")
    if size > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise GenforgeError(
            "WORLD_SIZE is set but MASTER_ADDR/MASTER_PORT are not; start several processes with torchrun"
        )
    return World(rank, size, local_rank)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> World:
    """The World of the process group this process has joined (one process when none)."""
    if not _active():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


@contextlib.contextmanager
def session(world: World, device: torch.device, timeout_minutes: float) -> Iterator[torch.device]:
    """Join the run's process group for the duration of the block; yields this rank's device
    (``cuda:LOCAL_RANK`` on GPUs). For one process, nothing happens and ``device`` comes back."""
    if not world.distributed or dist.is_initialized():  # a caller that set the group up keeps it
        yield device
        return
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise GenforgeError(
                f"LOCAL_RANK {world.local_rank}, but this machine has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise GenforgeError(f"several processes on device {device.type} are not supported; use --device cpu or cuda")
    try:
        dist.init_process_group(
            backend, rank=world.rank, world_size=world.size, timeout=timedelta(minutes=timeout_minutes)
        )
    except (RuntimeError, ValueError) as error:  # torch's DistError is a RuntimeError
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise GenforgeError(f"{world.describe()} could not join the other processes at {where}: {error}") from None
    try:
        yield device
        # Leave together: rank 1, having left while rank 0 still worked, aborted at exit
        # ("terminate called without an active exception", gloo) in 2 of about 15 runs of
        # tests/test_distributed.py. Whether this barrier cures that is not proven (too rare to
        # measure here); it is the usual advice and costs one collective. Skipped when the body
        # raised: a peer may be gone, and the error is what matters.
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# What ranks say to each other (each a no-op for one process)
# ---------------------------------------------------------------------------------------------


def barrier() -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a checkpoint)."""
    if _active():
        dist.barrier()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` (anything picklable), on every rank."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank if it is true on any (one rank's signal stops them all)."""
    if not _active():
        return tuple(bool(f) for f in flags)
    t = torch.tensor([int(f) for f in flags], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def average(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over the ranks of each scalar tensor in ``values`` (one collective for all)."""
    if not _active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    device = stacked.device
    stacked = stacked.to(_collective_device())
    dist.all_reduce(stacked)
    stacked = (stacked / dist.get_world_size()).to(device)
    return dict(zip(values, stacked.unbind()))


def average_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module``'s parameters over the ranks, in place: for a backward that
    did not run through DistributedDataParallel (a lazy regularisation step through the unwrapped
    module). One process: nothing to do."""
    if not _active():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    device = flat.device
    flat = flat.to(_collective_device())
    dist.all_reduce(flat)
    flat = (flat / dist.get_world_size()).to(device)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def lost_peer(error: BaseException) -> str | None:
    """If ``error`` came from the process group (a rank died, or stopped answering past the
    timeout) rather than from this rank's own work: what it said, in a line. Else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    text = str(error).strip()
    from_group = isinstance(error, getattr(dist, "DistError", ())) or (
        isinstance(error, RuntimeError) and ("gloo" in text.lower() or "nccl" in text.lower())
    )
    if not from_group:
        return None
    line = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0] if text else type(error).__name__)  # gloo's source path
    return line.split(". ")[0].rstrip(".")


# ---------------------------------------------------------------------------------------------
# Noise and batches for a training step
# ---------------------------------------------------------------------------------------------


def randn(rows: int, *shape: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """This rank's ``rows`` rows of one (rows * world size, *shape) standard-normal draw.

    Every rank draws the same global tensor from its generator (equal on all ranks) and keeps its
    own slice: together the ranks use exactly the noise one process with the whole batch would,
    and no two ranks share a row. For one process this is ``torch.randn(rows, *shape)``.
    """
    return draws.randn((rows, *shape), share(generator), device)


def share(generator: torch.Generator) -> Share:
    """``generator`` as a training step passes it to the code that draws per-sample noise
    (augmentation, a network's noise, a penalty's mixing weights, masks): each draw is then this
    rank's rows of one draw for the global batch (``draws.Share``); for one process, the generator."""
    world = current()
    return Share(generator, world.rank, world.size)


@contextlib.contextmanager
def step_rng(seed: int, step: int) -> Iterator[None]:
    """Under several processes, the global RNG (what dropout draws from) seeded by (seed, step,
    rank) for the block, and restored after it: the ranks' dropout masks differ, and a resumed run
    draws the same ones again. For one process nothing changes (its RNG state is checkpointed)."""
    world = current()
    if not world.distributed:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(((seed * 1_000_003 + step) * 65_537 + world.rank) % 2**63)
        yield


def check_batch(examples: int, batch_size: int, world_size: int) -> None:
    """Under several processes, every rank's share of each global batch must be whole: the global
    batch splits evenly over the ranks, and the data holds at least one global batch (a smaller
    dataset would leave some ranks' shares short or empty)."""
    if batch_size % world_size:
        raise GenforgeError(
            f"train.batch_size {batch_size} (the global batch) does not split evenly over "
            f"{world_size} processes; make it a multiple of {world_size}"
        )
    if world_size > 1 and examples < batch_size:
        raise GenforgeError(
            f"the data has {examples} examples, fewer than train.batch_size {batch_size} (the global batch): "
            f"{world_size} processes would get unequal or empty shares of it; lower train.batch_size to a "
            f"multiple of {world_size} no larger than {examples}, or use more data"
        )
