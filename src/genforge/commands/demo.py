"""``genforge demo``: the main job on the embedded default data.

Trains a GAN and a VQ-VAE + prior on the same data with the same training time each, scores both
with the same feature network against the real-vs-real floor, and writes a side-by-side report.
Running it again resumes whatever did not finish.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from genforge import families
from genforge.commands.compare import compare
from genforge.commands.evaluate import evaluate, real_vs_real
from genforge.commands.registry import Command, add_device, add_features, count, number
from genforge.data import load_dataset
from genforge.errors import GenforgeError
from genforge.families.prior import split_minutes
from genforge.metrics.extractors import REAL_N, choose_features, get_extractor
from genforge.progress import SILENT, Reporter
from genforge.runfolder import REPORT
from genforge.training.devices import pick_device
from genforge.training.runs import train

# Of each family's training time, the VQ-VAE gets families.prior.VQVAE_SHARE and the prior the rest
# (split_minutes: one place for the demo and the benchmarks).
# The feature network the named datasets are scored with: the classifier suits small grey images;
# colour emoji are scored with the standard FID network. Other data: its labels decide
# (extractors.choose_features: the classifier when it has labels, else Inception).
FEATURES = {"fashion-mnist": "classifier", "mnist": "classifier", "emoji": "inception"}
# Per feature network: the share of the demo's minutes spent training (the rest: the feature
# network, codes, evaluation, report) and the samples per evaluation. Inception costs about
# 0.075 s an image on two CPU cores, so its evaluations take fewer samples and more of the time.
TRAINING_SHARE = {"classifier": 0.8, "inception": 0.55}
EVAL_SAMPLES = {"classifier": 10_000, "inception": 1_000}


def default_out(data: str) -> Path:
    """Where ``genforge demo`` writes without --out: ``runs/demo`` for Fashion-MNIST, else
    ``runs/demo-NAME`` (a path's last part), so a demo on other data never meets this one's runs."""
    if data == "fashion-mnist":
        return Path("runs/demo")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data.rstrip("/\\")).name).strip("-.") or "data"
    return Path(f"runs/demo-{name}")


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
    n_eval: int | None = None,
    device_name: str = "auto",
    reporter: Reporter = SILENT,
    sets: list[str] = (),
    limit: int = 0,
    features: str | None = None,
) -> DemoResult:
    """``limit`` > 0 trains on (and encodes) only that many images per split: for quick checks.

    ``reporter`` shows the training and evaluation as they go; the stage headings and the closing
    summary are the demo's own and always printed."""
    if not minutes > 0:
        raise GenforgeError(f"--minutes must be positive, got {minutes}")
    load_dataset(data, split="train", limit=1, reporter=reporter)  # a missing dataset fails now, not after the training
    if features is None and data in FEATURES:
        features, why = FEATURES[data], f"the demo's choice for {data}"
    else:
        features, why = choose_features(data, features)
    n_eval = n_eval or EVAL_SAMPLES[features]
    started = time.perf_counter()
    out = Path(out)
    device = pick_device(device_name)
    per_family = minutes * TRAINING_SHARE[features] / 2
    common = {"data": {"source": data, "limit": limit}}

    def budget(minutes: float) -> dict:
        return {"train": {"device": device_name, "minutes": minutes}}

    vq_minutes, prior_minutes = split_minutes(per_family)
    gan, vqvae, prior = families.get("gan"), families.get("vqvae"), families.get("prior")
    gan_cfg = gan.resolve("default", None, sets, {**common, **budget(per_family)})
    vq_cfg = vqvae.resolve("default", None, (), {**common, **budget(vq_minutes)})
    prior_cfg = prior.resolve("default", None, (), {"vqvae": str(out / "vqvae"), **budget(prior_minutes)})

    _say(f"demo: {minutes:g} min budget; {per_family:.1f} min of training per family on {device}; runs in {out}")
    _say(f"features: {features} ({why}); the feature network is set up once, then cached")
    get_extractor(features, data, device, reporter)

    _say(f"1/3 GAN (DCGAN, {per_family:.1f} min)")
    train(gan, gan_cfg, out / "gan", reporter=reporter)
    _say(f"2/3 VQ-VAE ({vq_minutes:.1f} min)")
    train(vqvae, vq_cfg, out / "vqvae", reporter=reporter)
    _say(f"3/3 prior over the VQ-VAE's codes ({prior_minutes:.1f} min)")
    train(prior, prior_cfg, out / "prior", reporter=reporter)

    _say(f"evaluation: {n_eval} samples each, {features} features, against the real-vs-real floor")
    floor = real_vs_real(data, n=n_eval, features=features, device=device, reporter=reporter)
    scores = {}
    for name in ("gan", "prior", "vqvae"):
        scores[name] = evaluate(
            out / name,
            n=n_eval,
            features=features,
            device=device,
            reporter=reporter,
            extra={"fd_floor": floor["fd"]},
            reference_n=REAL_N if features == "classifier" else n_eval,
        )
    title = f"genforge demo: GAN vs VQ-VAE + prior on {data}"
    # The demo's folder holds runs and is none itself; its page takes the name a run's has.
    path = compare([out / name for name in ("gan", "prior", "vqvae")], out / REPORT, title=title)
    _say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    for name in ("gan", "prior"):
        s = scores[name]
        classes = f", classes {s['classes_covered']:.0f}/{s['num_classes']:.0f}" if "classes_covered" in s else ""
        print(
            f"{name:>6}: Frechet distance {s['fd']:.3f} (floor {floor['fd']:.3f}), recall {s['recall']:.3f}, "
            f"coverage {s['coverage']:.3f}{classes}",
            file=sys.stderr,
        )
    s = scores["vqvae"]
    print(f" vqvae: test PSNR {s['psnr']:.2f} dB, codebook usage {s['codebook_usage']:.1%}", file=sys.stderr)
    print(f"report: {path}", file=sys.stderr)
    return DemoResult(path, scores)


# ---------------------------------------------------------------------------------------------
# The command line: genforge demo
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=number, default=15.0, help="total time budget (default 15)")
    p.add_argument(
        "--out",
        type=Path,
        help="folder of the three runs and the report (default runs/demo, runs/demo-DATA for other data)",
    )
    p.add_argument("--data", default="fashion-mnist", help="named dataset or path (default fashion-mnist)")
    p.add_argument("--n", type=count(1), help="samples per evaluation (default 10000; 1000 with inception)")
    add_features(p, default=None, help="default: classifier if labelled, but emoji: inception")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else default_out(args.data)
    reporter = Reporter(enabled=not args.quiet)
    result = run_demo(out, args.minutes, args.data, args.n, args.device, reporter, features=args.features)
    print(f"wrote {result.report}")
    return 0


DEMO = Command("demo", "the main job: GAN vs VQ-VAE + prior, same budget, one report", add_arguments, run)
