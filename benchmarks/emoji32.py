"""Small colour data at 32x32: the 3,786 emoji downscaled to 32 px, every generator family with the
same wall time, in one run.

Arms: plain DCGAN (genforge's default: EMA, no augmentation), DCGAN + mirror (x-flips of the
reals, ``augment.mirror=true``; skipped with one line where this genforge refuses the key), DCGAN
+ DiffAugment, DCGAN + ADA, StyleGAN2 (its CPU-sized default, ADA on), FastGAN (its CPU-sized
default, DiffAugment on) and the VQ-VAE + prior (the demo's split of the time between them).
Every arm's sampling settings (truncation, psi, the prior's decoding options) are chosen by
``genforge tune`` against images the scores never use, or none is tuned (``--no-tune``): the
table's sampling column says which. Each arm is scored as
``emoji_quality.py`` scores (``common.small_data_scores``): Inception FID and KID of n samples
against n of the training images (n = all 3,786 unless ``--n``), precision/recall, and the
nearest-neighbour ratio; a grid of its first 64 samples goes to ``<grids>/emoji32-<arm>.png``.
The table ends with the line ``emoji-32 best arm / plain DCGAN KID: R``.

    python benchmarks/emoji32.py [--minutes 20] [--arms dcgan,mirror,diffaugment,ada,stylegan2,fastgan,vq]
                                 [--n 3786] [--out runs/bench-emoji32] [--grids docs] [--tune-n 500] [--no-tune]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from common import machine, small_data_scores, table
from genforge import families
from genforge.data import load_dataset
from genforge.errors import GenforgeError
from genforge.families.prior import VQVAE_SHARE
from genforge.images import save_grid
from genforge.progress import Reporter
from genforge.training.runs import train
from tuning import sampling_used, settle_sampling

DATA = "emoji"
RESOLUTION = 32
# arm -> (family, preset, --set values); the VQ arm trains a VQ-VAE, then a prior on its codes.
ARMS = {
    "dcgan": ("gan", "default", []),
    "mirror": ("gan", "default", ["augment.mirror=true"]),
    "diffaugment": ("gan", "diffaugment", []),
    "ada": ("gan", "ada", []),
    "stylegan2": ("stylegan2", "default", []),
    "fastgan": ("fastgan", "default", []),
    "vq": ("vqvae", "default", []),
}
NAMES = {
    "dcgan": "plain DCGAN",
    "mirror": "DCGAN + mirror",
    "diffaugment": "DCGAN + DiffAugment",
    "ada": "DCGAN + ADA",
    "stylegan2": "StyleGAN2 + ADA",
    "fastgan": "FastGAN",
    "vq": "VQ-VAE + prior",
}


def data_section(minutes: float) -> dict:
    return {"data": {"source": DATA, "resolution": RESOLUTION}, "train": {"minutes": minutes}}


def arm_config(arm: str, minutes: float):
    """The arm's run config (the VQ arm's: its VQ-VAE's); a key this genforge does not know is a
    ``GenforgeError`` here, before anything is written."""
    family, preset, values = ARMS[arm]
    share = VQVAE_SHARE if arm == "vq" else 1.0
    return families.get(family).resolve(preset, None, values, data_section(minutes * share))


def train_arm(arm: str, config, minutes: float, out: Path) -> Path:
    """Train one arm for ``minutes`` (the VQ arm's two stages share them); its sampling run folder."""
    spec = families.get(ARMS[arm][0])
    if arm != "vq":
        train(spec, config, out / arm, reporter=Reporter())
        return out / arm
    train(spec, config, out / "vqvae", reporter=Reporter())
    prior = families.get("prior")
    extra = {"vqvae": str(out / "vqvae"), "train": {"minutes": minutes * (1 - VQVAE_SHARE)}}
    train(prior, prior.resolve("default", None, (), extra), out / "prior", reporter=Reporter())
    return out / "prior"


def git_commit() -> str:
    """The commit the benchmark ran at (``+changes`` when the work tree differs from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def best_over_plain(results: list[dict]) -> str | None:
    """The closing line: the best other arm's KID over plain DCGAN's (None without both)."""
    by_name = {r["arm"]: r for r in results}
    base = by_name.get(NAMES["dcgan"])
    others = [r for r in results if r["arm"] != NAMES["dcgan"]]
    if base is None or not others:
        return None
    best = min(others, key=lambda r: r["KID"])
    return f"emoji-32 best arm / plain DCGAN KID: {best['KID'] / base['KID']:.3f} (best arm: {best['arm']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall time per arm")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from: {', '.join(ARMS)}")
    parser.add_argument("--n", type=int, default=0, help="samples and real images to score (default: all 3,786)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-emoji32"))
    parser.add_argument("--grids", type=Path, default=Path("docs"), help="where emoji32-<arm>.png go")
    parser.add_argument("--tune-n", type=int, default=500, help="samples per sampling setting tried")
    parser.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True, help="tune every arm (or none)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}: choose from {', '.join(ARMS)}")
    device = torch.device("cpu")
    n = args.n or len(load_dataset(DATA).images)  # 3,786
    header = f"{machine()} | git {git_commit()}"
    results, reference_n = [], 0
    for arm in arms:
        try:
            config = arm_config(arm, args.minutes)
        except GenforgeError as e:
            if arm != "mirror":
                raise
            print(f"skipping arm mirror: this genforge refuses augment.mirror=true ({e})", flush=True)
            continue
        started = time.perf_counter()
        run = train_arm(arm, config, args.minutes, args.out)
        trained = time.perf_counter() - started
        settle_sampling(run, args.tune, args.tune_n, "classifier", device)
        scores, fake = small_data_scores(run, n, device)
        reference_n = scores.pop("reference_n")
        grid = save_grid(fake[:64], args.grids / f"emoji32-{arm}.png", nrow=8)
        row = {"arm": NAMES[arm], "steps": scores.pop("steps"), "train min": trained / 60, **scores}
        row["sampling"] = sampling_used(run)
        results.append(row)
        print(json.dumps({**row, "grid": str(grid)}), flush=True)

    lines = [
        f"# {header}",
        f"# emoji 32x32 (the 3,786 64x64 images resized), {args.minutes:g} min training per arm",
        f"# Inception features: FID and KID of n = {n} samples against n = {reference_n} training images | "
        + (f"every arm tuned (genforge tune, {args.tune_n} samples per setting)" if args.tune else "no arm tuned"),
        "",
        table(
            results,
            ["arm", "steps", "train min", "FID", "KID", "KID std", "precision", "recall", "NN ratio", "sampling"],
        ),
    ]
    if (closing := best_over_plain(results)) is not None:
        lines += ["", closing]
    report = "\n".join(lines)
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emoji32.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
