"""Device and precision choices, made once at start-up."""

from __future__ import annotations

import contextlib

import torch

from genforge.errors import GenforgeError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenforgeError("--device cuda was asked for but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenforgeError("--device mps was asked for but this PyTorch has no MPS support (use --device cpu or auto)")
    return torch.device(name)


def cpu_has_amx() -> bool:
    """bf16 matrix units (Intel AMX) make bf16 autocast several times faster on CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """'auto' chooses bf16 where the hardware runs it fast (AMX CPUs, bf16-capable GPUs)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device.type == "cpu" and cpu_has_amx():
            return torch.bfloat16
        return torch.float32
    if name == "fp16" and device.type != "cuda":
        raise GenforgeError("train.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision context; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
