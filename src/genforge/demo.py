"""``genforge demo``: the main job on the embedded default data.

Trains a GAN and a VQ-VAE + prior on Fashion-MNIST with the same training time each, scores both
with the same feature network against the real-vs-real floor, and writes a side-by-side report.
Running it again resumes whatever did not finish.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from genforge import evaluation, report
from genforge.config import resolve
from genforge.training import runs
from genforge.training.gan import GAN_PRESETS, GANRunConfig
from genforge.training.prior import PRIOR_PRESETS, PriorRunConfig
from genforge.training.vqvae import VQVAE_PRESETS, VQVAERunConfig

# Of each family's training time, the share the VQ-VAE gets; the prior gets the rest.
VQVAE_SHARE = 0.45
# Of the demo's total minutes, the share spent training (the rest: evaluator, codes, evaluation, report).
TRAINING_SHARE = 0.8


@dataclass
class DemoResult:
    report: Path
    scores: dict[str, dict]


def _say(message: str) -> None:
    print(f"\n== {message}", file=sys.stderr, flush=True)


def run_demo(
    out: Path,
    minutes: float = 15.0,
    data: str = "fashion-mnist",
    n_eval: int = 10_000,
    device_name: str = "auto",
    progress: bool = True,
    sets: list[str] = (),
    limit: int = 0,
) -> DemoResult:
    """``limit`` > 0 trains on (and encodes) only that many images per split: for quick checks."""
    from genforge.data import load_dataset
    from genforge.errors import GenforgeError
    from genforge.training.device import pick_device

    if minutes <= 0:
        raise GenforgeError(f"--minutes must be positive, got {minutes}")
    try:  # the floor and the VQ-VAE's scores use held-out images: find out now, not after the training
        load_dataset(data, split="test", limit=1)
    except GenforgeError as e:
        raise GenforgeError(f"the demo needs {data}'s test split: {e}") from None
    started = time.perf_counter()
    out = Path(out)
    device = pick_device(device_name)
    per_family = minutes * TRAINING_SHARE / 2
    common = {"data": {"source": data, "limit": limit}, "train": {"device": device_name}}
    gan_cfg = resolve(
        GANRunConfig,
        GAN_PRESETS,
        "default",
        None,
        sets,
        {**common, "train": {**common["train"], "minutes": per_family}},
    )
    vq_cfg = resolve(
        VQVAERunConfig,
        VQVAE_PRESETS,
        "default",
        None,
        (),
        {**common, "train": {**common["train"], "minutes": per_family * VQVAE_SHARE}},
    )
    prior_cfg = resolve(
        PriorRunConfig,
        PRIOR_PRESETS,
        "default",
        None,
        (),
        {
            "vqvae": str(out / "vqvae"),
            "train": {"device": device_name, "minutes": per_family * (1 - VQVAE_SHARE)},
        },
    )

    _say(f"demo: {minutes:g} min budget; {per_family:.1f} min of training per family on {device}; runs in {out}")
    _say("the evaluator: a small classifier on the data's labels (trained once, then cached)")
    evaluation.train_evaluator(data, device, progress)

    _say(f"1/3 GAN (DCGAN, {per_family:.1f} min)")
    runs.train_gan(gan_cfg, out / "gan", progress=progress)
    _say(f"2/3 VQ-VAE ({per_family * VQVAE_SHARE:.1f} min)")
    runs.train_vqvae(vq_cfg, out / "vqvae", progress=progress)
    _say(f"3/3 prior over the VQ-VAE's codes ({per_family * (1 - VQVAE_SHARE):.1f} min)")
    runs.train_prior(prior_cfg, out / "prior", progress=progress)

    _say(f"evaluation: {n_eval} samples each, classifier features, against the real-vs-real floor")
    floor = evaluation.real_vs_real(data, n=n_eval, device=device, progress=progress)
    scores = {}
    for name in ("gan", "prior", "vqvae"):
        scores[name] = evaluation.evaluate(
            out / name, n=n_eval, device=device, progress=progress, extra={"fd_floor": floor["fd"]}
        )
    summaries = [report.collect(out / name) for name in ("gan", "prior", "vqvae")]
    path = report.write_report(summaries, out / "report.html", title=f"genforge demo: GAN vs VQ-VAE + prior on {data}")
    _say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    for name in ("gan", "prior"):
        s = scores[name]
        print(
            f"{name:>6}: Frechet distance {s['fd']:.3f} (floor {floor['fd']:.3f}), recall {s['recall']:.3f}, "
            f"coverage {s['coverage']:.3f}, classes {s.get('classes_covered', 0):.0f}/{s.get('num_classes', 0):.0f}",
            file=sys.stderr,
        )
    s = scores["vqvae"]
    print(f" vqvae: test PSNR {s['psnr']:.2f} dB, codebook usage {s['codebook_usage']:.1%}", file=sys.stderr)
    print(f"report: {path}", file=sys.stderr)
    return DemoResult(path, scores)
