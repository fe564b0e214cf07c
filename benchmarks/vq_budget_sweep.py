"""How a VQ-VAE + prior budget is best spent: the VQ-VAE / prior split and the learning-rate schedule.

For each VQ-VAE preset x split x schedule, a VQ-VAE trains for ``split * M`` minutes and a prior
over its codes for the rest, both with the same schedule (``constant``: warm-up then constant;
``cosine``: decay to 10% over the run, ``families/schedule.py``). The prior's samples are scored
against the real data (``--features``, ``--n`` samples; optionally after ``genforge tune`` picks
its sampling settings), and the VQ-VAE's reconstructions of the test split too (a VQ-VAE's
reconstructions bound its prior's samples). Runs land in ``--out``; running the command again
resumes or reuses them. The table is printed as markdown, with the best arm named; the default
split lives in ``families/prior.py`` (``VQVAE_SHARE``), the schedules in the optim configs.

    python benchmarks/vq_budget_sweep.py [--minutes 6] [--splits 0.3,0.45,0.6] [--schedules constant,cosine]
        [--vq-presets default] [--network ar] [--n 5000] [--tune-n 0] [--prior-set KEY=VALUE ...] [--vq-set KEY=VALUE ...]
        [--data fashion-mnist] [--limit 0] [--out runs/vq-sweep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.demo import FEATURES
from genforge.commands.evaluate import evaluate
from genforge.commands.tune import tune
from genforge.families.prior import VQVAE_SHARE, split_minutes
from genforge.metrics.extractors import get_extractor
from genforge.progress import Reporter
from genforge.training.runs import train


def arm_name(preset: str, split: float, schedule: str) -> str:
    return f"{preset}-vq{split:g}-{schedule}"


def run_arm(args, preset: str, split: float, schedule: str, device: torch.device) -> dict:
    folder = args.out / arm_name(preset, split, schedule)
    reporter = Reporter(enabled=not args.quiet)
    vq_minutes, prior_minutes = split_minutes(args.minutes, split)
    vqvae, prior = families.get("vqvae"), families.get("prior")
    data = {"source": args.data, "limit": args.limit}
    vq_values = {"data": data, "optim": {"lr_schedule": schedule}, "train": {"minutes": vq_minutes}}
    vq_cfg = vqvae.resolve(preset, None, args.vq_set, vq_values)
    vq_result = train(vqvae, vq_cfg, folder / "vqvae", reporter=reporter)
    prior_values = {
        "vqvae": str(folder / "vqvae"),
        "network": args.network,
        "optim": {"lr_schedule": schedule},
        "train": {"minutes": prior_minutes},
    }
    prior_cfg = prior.resolve("default", None, args.prior_set, prior_values)
    prior_result = train(prior, prior_cfg, folder / "prior", reporter=reporter)
    if args.tune_n > 0:
        tune(folder / "prior", n=args.tune_n, features=args.features, device=device, reporter=reporter)
    scored = evaluate(folder / "prior", n=args.n, features=args.features, device=device, reporter=reporter)
    recon = evaluate(folder / "vqvae", n=args.n, features=args.features, device=device, reporter=reporter)
    return {
        "arm": arm_name(preset, split, schedule),
        "preset": preset,
        "split": split,
        "schedule": schedule,
        "vq_minutes": vq_minutes,
        "prior_minutes": prior_minutes,
        "vq_steps": ckpt.load(folder / "vqvae").step,
        "prior_steps": ckpt.load(folder / "prior").step,
        "vq_images_per_s": vq_result.images_per_second,
        "prior_images_per_s": prior_result.images_per_second,
        "recon_fd": recon.get("recon_fd"),
        "psnr": recon.get("psnr"),
        "codebook_usage": recon.get("codebook_usage"),
        **{
            k: scored.get(k) for k in ("fd", "kid", "precision", "recall", "coverage", "classes_covered", "num_classes")
        },
        "code_nll": scored.get("code_nll", scored.get("masked_code_ce")),
        "sampling": scored.get("sampling"),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| VQ-VAE preset | split (VQ-VAE share) | schedule | VQ-VAE steps | prior steps | recon FD | PSNR | "
        "prior code loss | prior FD | precision | recall | coverage | classes |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        classes = f"{r['classes_covered']:.0f}/{r['num_classes']:.0f}" if r.get("classes_covered") is not None else ""
        lines.append(
            f"| {r['preset']} | {r['split']:g} | {r['schedule']} | {r['vq_steps']} | {r['prior_steps']} | "
            f"{_f(r['recon_fd'], 3)} | {_f(r['psnr'], 2)} | {_f(r['code_nll'], 3)} | **{_f(r['fd'], 3)}** | "
            f"{_f(r['precision'], 3)} | {_f(r['recall'], 3)} | {_f(r['coverage'], 3)} | {classes} |"
        )
    return "\n".join(lines)


def _f(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="VQ-VAE + prior minutes per arm (the demo's: 6)")
    parser.add_argument("--splits", default="0.3,0.45,0.6", help="the VQ-VAE's shares of the minutes")
    parser.add_argument("--schedules", default="constant,cosine")
    parser.add_argument("--vq-presets", default="default", help="e.g. default,vqgan")
    parser.add_argument("--network", default="ar", choices=["ar", "maskgit"])
    parser.add_argument("--prior-set", action="append", default=[], metavar="KEY=VALUE", help="prior config override")
    parser.add_argument(
        "--vq-set", action="append", default=[], metavar="KEY=VALUE", help="VQ-VAE override, e.g. optim.disc_start=300"
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--features", help="default: classifier for the MNIST family, else inception")
    parser.add_argument("--n", type=int, default=5000, help="samples per evaluation")
    parser.add_argument("--tune-n", type=int, default=0, help="tune each prior's sampling first (samples per setting)")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images only (quick checks)")
    parser.add_argument("--out", type=Path, default=Path("runs/vq-sweep"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.features = args.features or FEATURES.get(args.data, "inception")
    device = torch.device("cpu")
    get_extractor(args.features, args.data, device, Reporter(enabled=not args.quiet))
    rows = []
    for preset in args.vq_presets.split(","):
        for split in (float(s) for s in args.splits.split(",")):
            for schedule in args.schedules.split(","):
                rows.append(run_arm(args, preset, split, schedule, device))
                print(f"{rows[-1]['arm']}: prior Frechet distance {rows[-1]['fd']:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(
        f"\n# {datetime.date.today()} | {platform.machine()} | {os.cpu_count()} cores | torch {torch.__version__} | "
        f"{args.data} | {args.minutes:g} min per arm | VQ-VAE {' '.join(args.vq_set)} | "
        f"prior {args.network} {' '.join(args.prior_set)} | "
        f"{args.features} features, {args.n} samples" + (f", tuned on {args.tune_n}" if args.tune_n else "")
    )
    print(table(rows))
    best = min(rows, key=lambda r: r["fd"])
    print(
        f"\nbest: {best['preset']}, VQ-VAE share {best['split']:g}, {best['schedule']} schedule "
        f"(prior Frechet distance {best['fd']:.3f}); today's defaults: VQVAE_SHARE = {VQVAE_SHARE:g}, "
        f"lr_schedule = {families.get('prior').resolve().optim.lr_schedule}"
    )


if __name__ == "__main__":
    main()
