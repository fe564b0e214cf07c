"""What every benchmark prints first: the machine (CPU model, cores, threads), torch, the date;
and what several share: a markdown table, the evaluator classifier on the real test images."""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np
import torch

from genforge.data import load_dataset
from genforge.metrics.extractors import get_extractor
from genforge.training.precision import machine_key


def machine() -> str:
    """One line naming the machine a table was measured on."""
    cpu = machine_key(torch.device("cpu")).split("|")[1]
    flags = _flags()
    return (
        f"{datetime.date.today()} | {cpu} ({flags}) | {os.cpu_count()} cores | {torch.get_num_threads()} threads | "
        f"torch {torch.__version__} | Python {platform.python_version()}"
    )


def _flags() -> str:
    """The CPU features that decide bf16 speed: AMX, AVX-512 bf16, AVX-512 (or none of them)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "flags unknown"
    found = [name for name in ("amx_bf16", "avx512_bf16", "avx512f") if name in text]
    return ", ".join(found) if found else "no AVX-512, no AMX"


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` (dicts) in ``columns`` order; floats to 4 significant digits."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def real_class_accuracy(data: str, device: torch.device) -> tuple[float, list[float]]:
    """The evaluator classifier on the real test images: its accuracy, and each class's (what
    samples that look like the data would score)."""
    test = load_dataset(data, split="test")
    labels = np.asarray(test.labels)
    predicted = get_extractor("classifier", data, device, progress=False).class_probs(test.images).argmax(axis=1)
    per_class = [float((predicted[labels == k] == k).mean()) for k in np.unique(labels)]
    return float((predicted == labels).mean()), per_class
