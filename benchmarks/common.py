"""What every benchmark prints first: the machine (CPU model, cores, threads), torch, the date;
and what several share: a markdown table, the evaluator classifier on the real test images, the
small-data scores of a run (Inception FID/KID, precision/recall, nearest-neighbour ratio)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.evaluate import evaluate
from genforge.data import load_configured, load_dataset
from genforge.families.registry import generate
from genforge.metrics.core import nearest_neighbour_ratio
from genforge.metrics.extractors import get_extractor
from genforge.progress import Reporter
from genforge.training.devices import machine_key


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
    predicted = get_extractor("classifier", data, device).class_probs(test.images).argmax(axis=1)
    per_class = [float((predicted[labels == k] == k).mean()) for k in np.unique(labels)]
    return float((predicted == labels).mean()), per_class


def small_data_scores(
    run: Path, n: int, device: torch.device, reporter: Reporter = Reporter()
) -> tuple[dict, np.ndarray]:
    """A generator run scored as the small-data benchmarks score it, and its ``n`` samples (uint8).

    Inception FID and KID of ``n`` samples against ``n`` of the images the run trained on (as it
    saw them: its recorded data section), precision/recall, and a memorisation check: the mean
    distance (pixels) from each sample to its nearest training image over the training set's own
    mean nearest-neighbour distance (about 1 or more: as novel as the data; towards 0: copies).
    """
    c = ckpt.load(run, kind=tuple(families.names()), map_location=device)
    spec = families.get(c.kind)
    real = load_configured(spec.data_config(c))[0].images[:n]  # uint8 (n, H, W, C)
    scores = evaluate(run, n=n, features="inception", device=device, reference_n=n, reporter=reporter)
    fake, _, _ = generate(spec.load(c, device), n, seed=1)
    flat = lambda images: images.reshape(len(images), -1).astype(np.float64) / 255.0  # noqa: E731
    row = {
        "steps": c.step,
        "FID": scores["fd"],
        "KID": scores["kid"],
        "KID std": scores["kid_std"],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "NN ratio": nearest_neighbour_ratio(flat(real), flat(fake)),
        "reference_n": scores["reference_n"],  # the real images FID/KID compared with (not a column)
    }
    return row, fake
