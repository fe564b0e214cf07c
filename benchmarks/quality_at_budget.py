"""Quality at a fixed wall-time budget: textbook DCGAN vs genforge's GANs vs VQ-VAE + prior.

Each arm trains for the same wall time on the same data and is scored with the same extractor
(10,000 samples by default) against the same real reference; the real-vs-real floor is printed
beside them. The textbook arm is the founding document's DCGAN as the paper trains it: fp32,
non-saturating loss, no EMA, plain Adam 2e-4 / 0.5, batch 128 (preset ``dcgan``). Beside
genforge's default GAN: the class-conditional GAN (preset ``conditional``; with the classifier's
verdict on how often it draws the class it was asked for) and StyleGAN2 (family ``stylegan2``,
ADA on). The VQ arm
splits its minutes between the VQ-VAE and the prior as the demo does
(``families.prior.split_minutes``).

Every arm is treated alike: with ``--tune`` (the default) each one's sampling settings (a GAN's
truncation, StyleGAN2's psi, the prior's decoding options) are chosen with ``genforge tune``
before it is scored (``--tune-n`` samples per setting, seed 1, against training images disjoint
from the reported reference; features follow the data unless ``--tune-features`` says);
``--no-tune`` scores every arm with its network's defaults. The table says which, per arm.

Fashion-MNIST is scored with the classifier features, emoji with Inception's, as the demo does;
other data by its labels (``choose_features``; ``--features`` overrides).

    python benchmarks/quality_at_budget.py [--minutes 15] [--data fashion-mnist|emoji] [--out runs/bench-quality]
        [--arms textbook,genforge,conditional,stylegan2,vq] [--vq-preset default] [--prior-preset default]
        [--tune | --no-tune] [--tune-n 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import machine, real_class_accuracy
from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.demo import FEATURES
from genforge.commands.evaluate import evaluate, real_vs_real
from genforge.families.prior import split_minutes
from genforge.metrics.extractors import choose_features, get_extractor
from genforge.progress import Reporter
from genforge.training.runs import train
from tuning import sampling_used, settle_sampling

VQ = "VQ-VAE + prior"
CONDITIONAL = "conditional GAN"
RUNS = {
    "textbook DCGAN": "textbook",
    "genforge GAN": "genforge",
    CONDITIONAL: "conditional",
    "StyleGAN2 + ADA": "stylegan2",
    VQ: "prior",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall time per arm")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--features", help="default: classifier for the MNIST family, else inception")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--arms", default="textbook,genforge,conditional,stylegan2,vq")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images only (quick checks)")
    parser.add_argument("--vq-preset", default="default", help="the VQ-VAE's preset (e.g. vqgan)")
    parser.add_argument("--prior-preset", default="default", help="the prior's preset (e.g. maskgit)")
    parser.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="choose every arm's sampling settings with genforge tune before scoring (all arms or none)",
    )
    parser.add_argument("--tune-n", type=int, default=2000, help="samples per setting when tuning")
    parser.add_argument(
        "--tune-features", help="features the tuning scores with (default: the data decides; Inception: hours on a CPU)"
    )
    args = parser.parse_args()
    arms = args.arms.split(",")
    m = args.minutes
    device = torch.device("cpu")
    features = args.features or FEATURES.get(args.data) or choose_features(args.data)[0]
    out = args.out / args.data
    data = {"data": {"source": args.data, "limit": args.limit}}
    budget = {**data, "train": {"minutes": m}}
    get_extractor(features, args.data, device, Reporter())
    floor = real_vs_real(args.data, n=args.n, features=features, device=device, reporter=Reporter())
    scores, speed = {}, {}

    def score(name: str, run: Path) -> None:
        settle_sampling(run, args.tune, args.tune_n, args.tune_features, device)
        scores[name] = evaluate(run, n=args.n, features=features, device=device, reporter=Reporter())

    gan = families.get("gan")
    if "textbook" in arms:
        speed["textbook DCGAN"] = train(
            gan, gan.resolve("dcgan", None, (), budget), out / "textbook", reporter=Reporter()
        )
        score("textbook DCGAN", out / "textbook")
    if "genforge" in arms:
        speed["genforge GAN"] = train(
            gan, gan.resolve("default", None, (), budget), out / "genforge", reporter=Reporter()
        )
        score("genforge GAN", out / "genforge")
    if "conditional" in arms:
        speed[CONDITIONAL] = train(
            gan, gan.resolve("conditional", None, (), budget), out / "conditional", reporter=Reporter()
        )
        score(CONDITIONAL, out / "conditional")
    if "stylegan2" in arms:
        sg = families.get("stylegan2")
        speed["StyleGAN2 + ADA"] = train(
            sg, sg.resolve("default", None, (), budget), out / "stylegan2", reporter=Reporter()
        )
        score("StyleGAN2 + ADA", out / "stylegan2")
    if "vq" in arms:
        vq_minutes, prior_minutes = split_minutes(m)
        vqvae, prior = families.get("vqvae"), families.get("prior")
        vq_cfg = vqvae.resolve(args.vq_preset, None, (), {**data, "train": {"minutes": vq_minutes}})
        speed["VQ-VAE"] = train(vqvae, vq_cfg, out / "vqvae", reporter=Reporter())
        prior_cfg = prior.resolve(
            args.prior_preset, None, (), {"vqvae": str(out / "vqvae"), "train": {"minutes": prior_minutes}}
        )
        speed[VQ] = train(prior, prior_cfg, out / "prior", reporter=Reporter())
        score(VQ, out / "prior")
        scores["VQ-VAE reconstructions"] = evaluate(
            out / "vqvae", n=args.n, features=features, device=device, reporter=Reporter()
        )

    references = ", ".join(sorted({f"{s['reference_n']:,}" for s in scores.values() if "reference_n" in s}))
    print(
        f"\n# {machine()} | {args.data} | {m:g} min per arm (VQ-VAE {split_minutes(m)[0]:.2f} + prior "
        f"{split_minutes(m)[1]:.2f}) | {features} features, {args.n} samples against "
        f"{references} real training "
        f"images (the floor: {floor['n']:,} held-out real against {floor['reference_n']:,}) | "
        + (f"every arm tuned (genforge tune, {args.tune_n} samples per setting)" if args.tune else "no arm tuned")
    )
    print(
        "| arm | steps | training images/s | Frechet distance | KID | precision | recall | coverage | classes covered "
        "| sampling |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| real-vs-real floor | | | {_cells(floor)} | |")
    for name, s in scores.items():
        if name == "VQ-VAE reconstructions":
            continue
        run = RUNS[name]
        steps = ckpt.load(out / run).step
        ips = _speed(speed.get(name))
        print(f"| {name} | {steps} | {ips} | {_cells(s)} | {sampling_used(out / run)} |")
    if VQ in scores:
        recon = scores["VQ-VAE reconstructions"]
        vq_steps, vq_ips = ckpt.load(out / "vqvae").step, _speed(speed["VQ-VAE"])
        print(
            f"\nVQ-VAE ({args.vq_preset}): {vq_steps} steps at {vq_ips or '?'} images/s; reconstructions: "
            f"Frechet distance {recon.get('recon_fd', float('nan')):.3f}, PSNR {recon.get('psnr', float('nan')):.2f} dB, "
            f"codebook usage {recon.get('codebook_usage', float('nan')):.1%}"
        )
        print(f"prior {scores[VQ].get('sampling', 'sampling: defaults')}")
    if "textbook DCGAN" in scores:
        base = scores["textbook DCGAN"]["fd"]
        for name in ("genforge GAN", VQ):
            if name in scores:
                ratio = scores[name]["fd"] / base
                goal = " (goal <= 0.333)" if name == "genforge GAN" else ""
                print(f"{name} / textbook Frechet distance: {ratio:.3f}{goal}")
    if CONDITIONAL in scores:
        c = scores[CONDITIONAL]
        print(
            f"conditional GAN: the classifier finds the asked class in {c.get('class_accuracy', float('nan')):.1%} of "
            f"samples, {c.get('class_accuracy_min', float('nan')):.1%} for the worst class (goal >= 90% every class)"
        )
        if features == "classifier":
            overall, per_class = real_class_accuracy(args.data, device)
            worst = min(per_class)
            print(
                f"the same classifier on the real test images: {overall:.1%}, {worst:.1%} for the worst class "
                "(what samples that match the data would score)"
            )
        if "genforge GAN" in scores:
            ratio = c["fd"] / scores["genforge GAN"]["fd"]
            print(f"conditional / unconditional genforge GAN Frechet distance: {ratio:.3f} (goal <= 1)")
    if "StyleGAN2 + ADA" in scores and "genforge GAN" in scores:
        ratio = scores["StyleGAN2 + ADA"]["fd"] / scores["genforge GAN"]["fd"]
        print(f"StyleGAN2 + ADA / genforge GAN (DCGAN) Frechet distance: {ratio:.3f}")
    if VQ in scores and "genforge GAN" in scores:
        ratio = scores[VQ]["fd"] / scores["genforge GAN"]["fd"]
        print(f"VQ-VAE + prior / genforge GAN Frechet distance: {ratio:.3f} (goal <= 1.3)")


def _speed(result) -> str:
    """Training images/s of the last logged window ("" when the run never logged: tiny budgets)."""
    return f"{result.images_per_second:.0f}" if result is not None and result.images_per_second else ""


def _cells(s: dict) -> str:
    classes = s.get("classes_covered")
    covered = f"{classes:.0f}/{s['num_classes']:.0f}" if classes is not None and "num_classes" in s else ""
    return (
        f"{s['fd']:.3f} | {s['kid']:.4f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['coverage']:.3f} | {covered}"
    )


if __name__ == "__main__":
    main()
