"""The device a command runs on, the machine it is (what cached measurements belong to), and
waiting for a device's queued work, so that the host's clock measures it."""

from __future__ import annotations

import os
import platform

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


def machine_key(device: torch.device) -> str:
    """What the cached choice belongs to: the processor (or GPU), core count and torch build."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return f"{device.type}|{name}|{os.cpu_count()} cores|{torch.get_num_threads()} threads|torch {torch.__version__}"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that the host's clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
