"""Does bf16 autocast + channels_last keep the GAN's quality? Same seed, same steps, both scored.

Trains genforge's default GAN twice on Fashion-MNIST for the same number of steps, once in plain
fp32 and once with the fast default (bf16 autocast + channels_last on an AMX CPU), and scores
both with classifier features on 10,000 samples.

    python benchmarks/precision_quality.py [--steps 800] [--out runs/bench-precision]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import torch

from genforge import families
from genforge.commands.evaluate import evaluate
from genforge.progress import Reporter

SETTINGS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-precision"))
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    device = torch.device("cpu")
    rows = []
    for name, train in SETTINGS.items():
        config = families.get("gan").resolve("default", None, (), {"train": {"steps": args.steps, **train}})
        out = args.out / name.replace(" ", "").replace("+", "-")
        result = train(families.get("gan"), config, out, reporter=Reporter())
        scores = evaluate(out, n=args.n, device=device, reporter=Reporter())
        rows.append((name, result, scores))
    print(
        f"\n# {datetime.date.today()} | {platform.machine()} | {os.cpu_count()} cores | torch {torch.__version__} | "
        f"default GAN, {args.steps} steps of batch 128, classifier features, {args.n} samples"
    )
    print("| setting | training images/s | Frechet distance | precision | recall | coverage |")
    print("|---|---|---|---|---|---|")
    for name, result, s in rows:
        print(
            f"| {name} | {result.images_per_second:.0f} | {s['fd']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['coverage']:.3f} |"
        )


if __name__ == "__main__":
    main()
