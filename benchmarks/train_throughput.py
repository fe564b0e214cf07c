"""Training throughput of the training loop, per family and precision setting, on this machine.

For each setting it reports images/s of the full loop (batching, logging, progress, periodic
checkpoints) and of the bare step (forward, backward, optimizer step on one fixed batch), and the
loop's overhead: time per step of the full loop over time per bare step (goal: <= 1.10).

    python benchmarks/train_throughput.py [--family gan|vqvae|all] [--steps 200] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genforge.config import from_dict, resolve, to_dict
from genforge.training.loop import run
from genforge.training.precision import fixed_precision as pick_precision

SETTINGS = [
    ("fp32", "fp32", False),
    ("fp32 + channels_last", "fp32", True),
    ("bf16 autocast", "bf16", False),
    ("bf16 autocast + channels_last", "bf16", True),
]


def make_family(family: str, precision: str, channels_last: bool, batch_size: int):
    device = torch.device("cpu")
    train = {
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": channels_last,
        "log_every": 50,
        "sample_every": 0,
        "checkpoint_every": 100_000,
    }
    if family == "gan":
        from genforge.families.gan import GAN_PRESETS, GANRunConfig, fit_to_data
        from genforge.families.gan import GANTrainer as GANFamily

        cfg = fit_to_data(resolve(GANRunConfig, GAN_PRESETS, "default", extra={"train": train}), 32, 1)
        return GANFamily(cfg, device, pick_precision(precision, device)), cfg
    if family == "vqvae":
        from genforge.families.vqvae import VQVAERunConfig, fit_to_data
        from genforge.families.vqvae import VQVAETrainer as VQVAEFamily

        cfg = fit_to_data(from_dict(VQVAERunConfig, {"train": train}), 32, 1)
        grid = torch.zeros(32, 1, 32, 32)
        return VQVAEFamily(cfg, device, pick_precision(precision, device), grid_images=grid), cfg
    raise SystemExit(f"unknown family {family}")


def fashion_like(n: int) -> np.ndarray:
    """Real Fashion-MNIST when present (padded to 32), else random images of the same shape."""
    try:
        from genforge.data import load_dataset

        return load_dataset("fashion-mnist", resolution=32, fit="pad", limit=n).images
    except Exception:
        return np.random.RandomState(0).randint(0, 256, (n, 32, 32, 1), dtype=np.uint8)


def bare_step_seconds(family, images: np.ndarray, steps: int) -> float:
    x = torch.from_numpy(images[: family.cfg.train.batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if family.cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(10):
        family.train_step(x, None)
    t0 = time.perf_counter()
    for _ in range(steps):
        family.train_step(x, None)
    return (time.perf_counter() - t0) / steps


def loop_step_seconds(family, cfg, images: np.ndarray, steps: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        cfg.train.steps = 10
        run(
            family,
            images,
            None,
            cfg.train,
            Path(d) / "warm",
            to_dict(cfg),
            noise={"noise": family.noise},
            progress=False,
        )
        cfg.train.steps = steps
        t0 = time.perf_counter()
        run(
            family,
            images,
            None,
            cfg.train,
            Path(d) / "timed",
            to_dict(cfg),
            noise={"noise": family.noise},
            progress=False,
        )
        return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="all", choices=["gan", "vqvae", "all"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--settings", default="all", help="comma-separated indices into the settings table")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = fashion_like(20_000)
    families = ["gan", "vqvae"] if args.family == "all" else [args.family]
    chosen = SETTINGS if args.settings == "all" else [SETTINGS[int(i)] for i in args.settings.split(",")]
    print(
        f"# {datetime.date.today()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | batch {args.batch_size} | {args.steps} steps"
    )
    print("| family | setting | loop images/s | bare-step images/s | loop overhead | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for fam in families:
        base = None
        for label, precision, channels_last in chosen:
            family, cfg = make_family(fam, precision, channels_last, args.batch_size)
            bare = bare_step_seconds(family, images, args.steps)
            family, cfg = make_family(fam, precision, channels_last, args.batch_size)
            loop = loop_step_seconds(family, cfg, images, args.steps)
            ips = args.batch_size / loop
            base = base or ips
            print(
                f"| {fam} | {label} | {ips:.0f} | {args.batch_size / bare:.0f} | {loop / bare:.3f} | {ips / base:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
