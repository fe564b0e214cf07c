"""Small colour data: GANs with and without discriminator augmentation, StyleGAN2, and the VQ-VAE +
prior, on the 3,786 emoji at 64x64, the same wall time each, in one run.

Every arm is scored with Inception features (FID and KID) on as many samples as there are
training images, against evaluate's reference (3,029 training images: every fifth, 757, is kept
for ``genforge tune``), plus a memorisation check: the mean distance (pixels) from each sample
to its nearest training image over the training set's own mean nearest-neighbour distance (about 1
or more: as novel as the data; towards 0: copies).

Every arm is treated alike: with ``--tune`` (the default) each one's sampling settings (truncation,
psi, the prior's decoding options) are chosen with ``genforge tune`` (``--tune-n`` samples per
setting, classifier features: quick, against the held-out 757) before it is scored; ``--no-tune``
scores every arm with its network's defaults. The table says which, per arm.

    python benchmarks/emoji_quality.py [--minutes 15] [--arms dcgan,diffaugment,ada,stylegan2,vq] [--out runs/bench-emoji]
        [--tune | --no-tune] [--tune-n 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import machine, small_data_scores, table
from genforge import families
from genforge.data import load_dataset
from genforge.families.prior import VQVAE_SHARE
from genforge.progress import Reporter
from genforge.training.runs import train
from tuning import sampling_used, settle_sampling

DATA = "emoji"
# arm -> (family, preset, --set values); the VQ arm trains a VQ-VAE, then a prior on its codes.
ARMS = {
    "dcgan": ("gan", "default", []),  # genforge's DCGAN (EMA), no augmentation: the plain baseline
    "diffaugment": ("gan", "diffaugment", []),
    "ada": ("gan", "ada", []),
    "stylegan2": ("stylegan2", "default", []),  # ADA on
    "vq": ("vqvae", "default", []),
}
NAMES = {
    "dcgan": "plain DCGAN",
    "diffaugment": "DCGAN + DiffAugment",
    "ada": "DCGAN + ADA",
    "stylegan2": "StyleGAN2 + ADA",
    "vq": "VQ-VAE + prior",
}


def train_arm(arm: str, minutes: float, out: Path, vq_share: float) -> Path:
    family, preset, values = ARMS[arm]
    spec = families.get(family)
    if arm != "vq":
        config = spec.resolve(preset, None, values, {"data": {"source": DATA}, "train": {"minutes": minutes}})
        train(spec, config, out / arm, reporter=Reporter())
        return out / arm
    vq = spec.resolve(preset, None, values, {"data": {"source": DATA}, "train": {"minutes": minutes * vq_share}})
    train(spec, vq, out / "vqvae", reporter=Reporter())
    prior = families.get("prior")
    config = prior.resolve(
        "default", None, (), {"vqvae": str(out / "vqvae"), "train": {"minutes": minutes * (1 - vq_share)}}
    )
    train(prior, config, out / "prior", reporter=Reporter())
    return out / "prior"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time per arm")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-emoji"))
    parser.add_argument(
        "--vq-share", type=float, default=None, help="VQ-VAE's share of the VQ arm (default: the demo's)"
    )
    parser.add_argument("--n", type=int, default=0, help="samples to score (default: as many as training images)")
    parser.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="choose every arm's sampling settings with genforge tune before scoring (all arms or none)",
    )
    # (16x16 codes: about 25 guided AR samples/s on 2 CPU cores, so the prior's 17 settings x 500 take ~6 minutes)
    parser.add_argument("--tune-n", type=int, default=500, help="samples per sampling setting tried")
    args = parser.parse_args()
    vq_share = VQVAE_SHARE if args.vq_share is None else args.vq_share
    device = torch.device("cpu")
    n = args.n or len(load_dataset(DATA).images)  # 3,786
    results, reference_n = [], 0
    for arm in args.arms.split(","):
        started = time.perf_counter()
        run = train_arm(arm, args.minutes, args.out, vq_share)
        trained = time.perf_counter() - started
        settle_sampling(run, args.tune, args.tune_n, "classifier", device)
        scores, _ = small_data_scores(run, n, device)
        reference_n = scores.pop("reference_n")
        row = {"arm": NAMES[arm], "steps": scores.pop("steps"), "train min": trained / 60, **scores}
        row["sampling"] = sampling_used(run)
        results.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n# {machine()} | emoji 64x64, {n} training images | {args.minutes:g} min training per arm")
    print(
        f"# Inception features: FID and KID of {n} samples against {reference_n} training images | "
        + (f"every arm tuned (genforge tune, {args.tune_n} samples per setting)" if args.tune else "no arm tuned")
    )
    columns = ["arm", "steps", "train min", "FID", "KID", "KID std", "precision", "recall", "NN ratio", "sampling"]
    print(table(results, columns))
    by_name = {r["arm"]: r for r in results}
    if NAMES["dcgan"] in by_name:
        base = by_name[NAMES["dcgan"]]["KID"]
        best = min((r for r in results if r["arm"] != NAMES["dcgan"]), key=lambda r: r["KID"], default=None)
        if best is not None:
            print(f"best arm ({best['arm']}) KID / plain DCGAN KID: {best['KID'] / base:.3f} (goal <= 0.5)")
    if NAMES["vq"] in by_name:
        gan_best = min((r for r in results if r["arm"] != NAMES["vq"]), key=lambda r: r["FID"], default=None)
        if gan_best is not None:
            ratio = by_name[NAMES["vq"]]["FID"] / gan_best["FID"]
            print(f"VQ-VAE + prior / best GAN ({gan_best['arm']}) FID: {ratio:.3f}")


if __name__ == "__main__":
    main()
