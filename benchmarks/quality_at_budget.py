"""Quality at a fixed wall-time budget: textbook DCGAN vs genforge's default GAN vs VQ-VAE + prior.

Each arm trains for the same wall time on Fashion-MNIST and is scored with the same extractor
(classifier features, 10,000 samples) against the same real reference; the real-vs-real floor is
printed beside them. The textbook arm is the founding document's DCGAN as the paper trains it:
fp32, non-saturating loss, no EMA, plain Adam 2e-4 / 0.5, batch 128 (preset ``dcgan``).

    python benchmarks/quality_at_budget.py [--minutes 15] [--out runs/bench-quality] [--arms textbook,genforge,vq]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import torch

from genforge import families
from genforge.commands.evaluate import evaluate, real_vs_real
from genforge.metrics.extractors import train_evaluator
from genforge.training.runs import train

VQVAE_SHARE = 0.45  # of the VQ arm's time, the VQ-VAE's share; the prior gets the rest (as the demo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall time per arm")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--arms", default="textbook,genforge,vq")
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    arms = args.arms.split(",")
    m = args.minutes
    device = torch.device("cpu")
    budget = {"train": {"minutes": m}}
    train_evaluator("fashion-mnist", device)
    floor = real_vs_real("fashion-mnist", n=args.n, device=device)
    scores = {}
    if "textbook" in arms:
        train(families.get("gan"), families.get("gan").resolve("dcgan", None, (), budget), args.out / "textbook")
        scores["textbook DCGAN"] = evaluate(args.out / "textbook", n=args.n, device=device)
    if "genforge" in arms:
        train(families.get("gan"), families.get("gan").resolve("default", None, (), budget), args.out / "genforge")
        scores["genforge GAN"] = evaluate(args.out / "genforge", n=args.n, device=device)
    if "vq" in arms:
        train(
            families.get("vqvae"),
            families.get("vqvae").resolve("default", None, (), {"train": {"minutes": m * VQVAE_SHARE}}),
            args.out / "vqvae",
        )
        prior_cfg = families.get("prior").resolve(
            "default",
            None,
            (),
            {"vqvae": str(args.out / "vqvae"), "train": {"minutes": m * (1 - VQVAE_SHARE)}},
        )
        train(families.get("prior"), prior_cfg, args.out / "prior")
        scores["VQ-VAE + prior"] = evaluate(args.out / "prior", n=args.n, device=device)

    print(
        f"\n# {datetime.date.today()} | {platform.machine()} | {os.cpu_count()} cores | torch {torch.__version__} | "
        f"{m:g} min per arm | classifier features, {args.n} samples"
    )
    print("| arm | Frechet distance | KID | precision | recall | coverage | classes covered |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| real-vs-real floor | {floor['fd']:.3f} | {floor['kid']:.4f} | {floor['precision']:.3f} | {floor['recall']:.3f} | {floor['coverage']:.3f} | {floor['classes_covered']:.0f} |"
    )
    for name, s in scores.items():
        print(
            f"| {name} | {s['fd']:.3f} | {s['kid']:.4f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['coverage']:.3f} | {s['classes_covered']:.0f} |"
        )
    if "textbook DCGAN" in scores:
        base = scores["textbook DCGAN"]["fd"]
        for name in ("genforge GAN", "VQ-VAE + prior"):
            if name in scores:
                ratio = scores[name]["fd"] / base
                print(
                    f"{name} / textbook Frechet distance: {ratio:.3f}"
                    + (" (goal <= 0.333)" if name == "genforge GAN" else "")
                )


if __name__ == "__main__":
    main()
