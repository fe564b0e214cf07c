"""Training in a precision: the dtypes by name, a precision the user named (refusing what the
device cannot run), autocast, fp16's gradient scaler and one optimizer update through it.
Which precision a run takes when its config leaves it open is measured by ``probe.py``.
"""

from __future__ import annotations

import contextlib

import torch

from genforge.errors import GenforgeError
from genforge.training import distributed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def fixed_precision(name: str, device: torch.device) -> torch.dtype:
    """A precision the user named -> its dtype, refusing what the device cannot run."""
    if name == "fp16" and device.type != "cuda":
        raise GenforgeError("train.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GenforgeError("train.precision bf16: this GPU has no bf16 support (use fp16 or fp32)")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision context; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def update(
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loss: torch.Tensor,
    clip: tuple[list[torch.Tensor], float] | None = None,
    average: torch.nn.Module | None = None,
) -> None:
    """One optimizer update from ``loss``: backward, gradient clipping (``(params, max_norm)``), step.

    With a GradScaler (fp16) the loss is scaled so small gradients do not flush to zero, the
    gradients are unscaled before clipping, and a step whose gradients overflowed is skipped.
    ``average``: a module whose gradients are averaged over the ranks here, for a step that ran
    through the module itself rather than DDP's wrapper (a GAN's lazy regularisation steps).
    """
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    if average is not None:
        distributed.average_gradients(average)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(*clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
