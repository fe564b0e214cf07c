"""DistributedDataParallel for a training step: ``step_module`` wraps the modules a step calls
(compiled when ``train.compile``), so that backward averages their gradients over the ranks, and
with ``train.sync_batchnorm`` their batch norm takes the statistics of every rank's batch. The
process group itself, and what ranks say to each other, are ``distributed.py``'s.

Choices, and why:
- ``torch.compile`` goes inside DDP (``DDP(torch.compile(module))``), as PyTorch's "where to
  apply torch.compile" page advises: dynamo does not handle the DDP wrapper well.
- Buffers are not broadcast from rank 0 before every forward (DDP's ``forward_sync_buffers``, once
  ``broadcast_buffers``). Every buffer genforge trains stays equal on every rank by construction:
  spectral norm's vectors follow the (synchronised) weights, the VQ codebook's EMA statistics are
  all-reduced by the quantizer itself, and with ``train.sync_batchnorm`` so are batch-norm
  statistics; without it each rank keeps its own running statistics, the usual DDP practice, and
  rank 0's are the ones checkpointed. Broadcasting would also cost a collective per forward and,
  in some torch versions, trips autograd's in-place check when a batch-norm discriminator is called
  on reals and on fakes before one backward (pytorch/pytorch#22095, #175024).
- ``find_unused_parameters`` stays off: every parameter of a wrapped module takes part in its
  loss. A forward through a wrapped module whose parameters all have ``requires_grad`` off (the
  GAN's generator step through D) fires no gradient hooks, which DDP accepts.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from genforge.config import TrainConfig
from genforge.training.distributed import _active, current

# DDP warns (once per process) when a gradient's strides differ from its bucket's; genforge's
# differ only in dimensions of size 1 (a conv with one input or output channel), the same layout.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

# torch >= 2.12 spells "do not broadcast buffers before each forward" forward_sync_buffers=False
# (buffers are still made equal when DDP starts); earlier versions broadcast_buffers=False.
_DDP_ARGUMENTS = inspect.signature(DistributedDataParallel.__init__).parameters
NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGUMENTS else {"broadcast_buffers": False}
)


class Method(nn.Module):
    """A module whose forward is another method of ``module``: DDP synchronises the gradients of
    what runs through ``forward`` only, so a step that calls ``net.loss(...)`` calls this."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.name)(*args, **kwargs)


def step_module(module: nn.Module, train: TrainConfig, method: str = "forward") -> Callable[..., Any]:
    """What a training step calls in place of ``module`` (which stays what is checkpointed).

    ``module`` (its ``method``, when that is not ``forward``), compiled when ``train.compile``, and
    under torchrun called through DistributedDataParallel, so backward averages its gradients over
    the ranks; with ``train.sync_batchnorm`` its batch-norm layers normalise over the global batch.
    """
    step: nn.Module = module if method == "forward" else Method(module, method)
    if train.compile:
        step = torch.compile(step)
    return _Replicated(module, step, train.sync_batchnorm) if current().distributed else step


class _Replicated:
    """Calls ``step`` through DistributedDataParallel, which it builds at the first call.

    Building DDP is collective (rank 0's weights go to every rank); every rank's first training
    step is too, so DDP is built there, and a trainer built on one rank alone (a model rebuilt from
    a checkpoint to score it, as the prior's ``finish`` does) never starts a collective.
    """

    def __init__(self, module: nn.Module, step: nn.Module, sync_batchnorm: bool):
        self.module, self.step, self.sync_batchnorm = module, step, sync_batchnorm
        self.replicated: DistributedDataParallel | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.replicated is None:
            if self.sync_batchnorm:
                convert_sync_batchnorm(self.module)
            device = next(self.module.parameters()).device
            device_ids = [device.index] if device.type == "cuda" else None
            self.replicated = DistributedDataParallel(self.step, device_ids=device_ids, **NO_FORWARD_BUFFER_SYNC)
        return self.replicated(*args, **kwargs)


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, differentiable: each rank's loss depends on every
    rank's input, so each input's gradient is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncBatchNorm(_BatchNorm):
    """Batch norm over every rank's batch where ``torch.nn.SyncBatchNorm`` does not run (CPU, gloo).

    It takes the mean and the variance over all ranks with two differentiable all-reduces (the
    mean first, then the squared deviations from it), so that the gradient, as SyncBatchNorm's,
    flows across ranks. Outside training, or in one process, it is plain batch norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        xf = x.float()
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count.item())
        mean = _SumOverRanks.apply(xf.sum(dims)) / n  # (C,)
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n  # (C,), biased, as batch norm uses
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * n / max(n - 1.0, 1.0)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make ``module``'s batch-norm layers normalise over every rank's batch, in place, keeping
    their parameter and buffer tensors (an optimizer built before still holds them, and
    checkpoints keep their keys): ``torch.nn.SyncBatchNorm`` on CUDA, ``SyncBatchNorm`` elsewhere."""
    if any(p.is_cuda for p in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for layer in module.modules():
        if isinstance(layer, _BatchNorm) and not isinstance(layer, (SyncBatchNorm, nn.SyncBatchNorm)):
            layer.__class__ = SyncBatchNorm  # the same state; only the forward differs
    return module
