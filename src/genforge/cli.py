"""The ``genforge`` command line: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genforge import __version__
from genforge.errors import GenforgeError


def _train_flags(p: argparse.ArgumentParser, presets: dict) -> None:
    p.add_argument("--out", required=True, type=Path, help="run folder (resumed if it holds a checkpoint)")
    p.add_argument("--data", help="named dataset or path (sets data.source)")
    p.add_argument(
        "--preset", default="default", help=f"named starting config: {', '.join(presets)} (default: default)"
    )
    p.add_argument("--config", type=Path, help="YAML file with config sections (data, model, optim, train, ...)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. train.batch_size=128",
    )
    p.add_argument("--steps", type=int, help="stop after N steps (train.steps)")
    p.add_argument(
        "--minutes", type=float, help="stop after M minutes of training, summed over resumes (train.minutes)"
    )
    p.add_argument("--batch-size", type=int, help="train.batch_size")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="train.device")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="train.precision")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _flag_overrides(args: argparse.Namespace) -> dict:
    train = {
        k: v
        for k, v in {
            "steps": args.steps,
            "minutes": args.minutes,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "device": args.device,
            "precision": args.precision,
        }.items()
        if v is not None
    }
    extra: dict = {"train": train} if train else {}
    if args.data is not None:
        extra["data"] = {"source": args.data}
    return extra


def build_parser() -> argparse.ArgumentParser:
    from genforge.losses import GAN_LOSSES
    from genforge.training.gan import GAN_PRESETS
    from genforge.training.prior import PRIOR_PRESETS
    from genforge.training.vqvae import VQVAE_PRESETS

    parser = argparse.ArgumentParser(
        prog="genforge", description="Train, sample, evaluate and compare GANs and VQ-VAEs."
    )
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (resumes when --out holds a checkpoint)")
    families = train.add_subparsers(dest="family", required=True)
    gan = families.add_parser("gan", help=f"DCGAN; losses: {', '.join(GAN_LOSSES)}")
    _train_flags(gan, GAN_PRESETS)
    vq = families.add_parser("vqvae", help="VQ-VAE: encoder, vector-quantized codebook (or FSQ), decoder")
    _train_flags(vq, VQVAE_PRESETS)
    prior = families.add_parser("prior", help="transformer prior over a VQ-VAE's codes (ar or maskgit)")
    _train_flags(prior, PRIOR_PRESETS)
    prior.add_argument("--vqvae", required=True, type=Path, help="the trained VQ-VAE run")
    prior.add_argument("--kind", choices=["ar", "maskgit"], help="autoregressive (default) or parallel decoding")

    for name, text in (
        ("reconstruct", "originals beside their VQ-VAE reconstructions"),
        ("encode", "code indices of a dataset (.npz)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", type=Path)
        p.add_argument("--data", help="dataset (default: the run's own)")
        p.add_argument("--split", default="test", choices=["train", "test", "all"])
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--n", type=int, default=32 if name == "reconstruct" else 0, help="images to use (0 = all)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    sample = sub.add_parser("sample", help="sample images from a trained run")
    sample.add_argument("run", type=Path)
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--format", choices=["png", "npz", "png-dir"], default="png", help="grid PNG, .npz array or folder of PNGs"
    )
    sample.add_argument("--nrow", type=int, help="images per row in the grid")
    sample.add_argument("--truncation", type=float, help="GAN: redraw latent entries beyond this magnitude")
    sample.add_argument(
        "--interpolate", type=int, metavar="STEPS", help="GAN: --n strips of STEPS images between two latents"
    )
    sample.add_argument(
        "--class", dest="class_label", type=int, help="prior: class to generate (class-conditional priors)"
    )
    sample.add_argument("--temperature", type=float, help="prior: softmax temperature (default 1)")
    sample.add_argument("--top-k", type=int, help="prior: sample among the k most likely codes")
    sample.add_argument("--top-p", type=float, help="prior (ar): nucleus sampling mass")
    sample.add_argument("--steps", type=int, help="prior (maskgit): parallel decoding steps")
    sample.add_argument("--cfg-scale", type=float, help="prior: classifier-free guidance scale (with --class)")
    sample.add_argument(
        "--no-cache", action="store_true", help="prior (ar): recompute the prefix every step (slow; for checks)"
    )
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    ev = sub.add_parser("evaluate", help="score a run (or a folder/.npz of images) against real data")
    ev.add_argument("run", type=Path, nargs="?", help="run folder, or a folder/.npz of images from any tool")
    ev.add_argument("--data", help="real data to compare with (default: the run's own)")
    ev.add_argument("--n", type=int, default=10_000, help="samples to generate and score (default 10000)")
    ev.add_argument(
        "--features",
        default="classifier",
        choices=["classifier", "inception"],
        help="feature network (default classifier)",
    )
    ev.add_argument(
        "--real-vs-real", action="store_true", help="score a train subset against the test split: the floor"
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--no-record", action="store_true", help="do not append the result to the run's metrics.jsonl")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    evaluator = sub.add_parser("evaluator", help="the classifier feature network of a dataset")
    esub = evaluator.add_subparsers(dest="evaluator_command", required=True)
    et = esub.add_parser("train", help="train (or show the cached) classifier on the dataset's labelled train split")
    et.add_argument("--data", required=True)
    et.add_argument("--epochs", type=int, default=3)
    et.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    cmp_ = sub.add_parser("compare", help="side-by-side HTML report of several runs")
    cmp_.add_argument("runs", type=Path, nargs="+")
    cmp_.add_argument("--out", type=Path, required=True)
    cmp_.add_argument("--data", help="only count evaluations made on this data")
    cmp_.add_argument("--title", default="genforge compare")
    rep = sub.add_parser("report", help="HTML report of one run (default: RUN/report.html)")
    rep.add_argument("run", type=Path)
    rep.add_argument("--out", type=Path)

    demo = sub.add_parser("demo", help="the main job: GAN vs VQ-VAE + prior on Fashion-MNIST, same budget, one report")
    demo.add_argument("--minutes", type=float, default=15.0, help="total time budget (default 15)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--data", default="fashion-mnist")
    demo.add_argument("--n", type=int, default=10_000, help="samples per evaluation")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    demo.add_argument("--quiet", action="store_true")

    data = sub.add_parser("data", help="inspect or locate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser("info", help="count, shape, channels, classes, value range")
    info.add_argument("source")
    info.add_argument("--split", default="train", choices=["train", "test", "all"])
    info.add_argument("--resolution", type=int)
    info.add_argument("--fit", default="none", choices=["none", "resize", "center-crop", "pad"])
    info.add_argument("--grid", type=Path, help="also write a grid of examples to this PNG")
    info.add_argument("--json", action="store_true")
    fetch = dsub.add_parser("fetch", help="say where a named dataset is, or how to install it (never downloads)")
    fetch.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except GenforgeError as e:
        print(f"genforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genforge: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "sample":
        return _sample(args)
    if args.command == "data":
        return _data(args)
    if args.command in ("reconstruct", "encode"):
        return _vqvae_tool(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "evaluator":
        return _evaluator(args)
    if args.command in ("compare", "report"):
        return _report(args)
    if args.command == "demo":
        from genforge.demo import run_demo

        result = run_demo(args.out, args.minutes, args.data, args.n, args.device, progress=not args.quiet)
        print(f"wrote {result.report}")
        return 0
    raise AssertionError(args.command)


def _train(args: argparse.Namespace) -> int:
    from genforge.config import dump_yaml, resolve
    from genforge.training import runs
    from genforge.training.gan import GAN_PRESETS, GANRunConfig
    from genforge.training.prior import PRIOR_PRESETS, PriorRunConfig
    from genforge.training.vqvae import VQVAE_PRESETS, VQVAERunConfig

    extra = _flag_overrides(args)
    if args.family == "gan":
        config = resolve(GANRunConfig, GAN_PRESETS, args.preset, args.config, args.sets, extra)
        result = runs.train_gan(config, args.out, progress=not args.quiet, dry_run=args.dry_run)
    elif args.family == "vqvae":
        config = resolve(VQVAERunConfig, VQVAE_PRESETS, args.preset, args.config, args.sets, extra)
        result = runs.train_vqvae(config, args.out, progress=not args.quiet, dry_run=args.dry_run)
    else:
        if "data" in extra:
            raise GenforgeError("a prior trains on its VQ-VAE's data; --data does not apply")
        extra["vqvae"] = str(args.vqvae)
        if args.kind is not None:
            extra["kind"] = args.kind
        config = resolve(PriorRunConfig, PRIOR_PRESETS, args.preset, args.config, args.sets, extra)
        result = runs.train_prior(config, args.out, progress=not args.quiet, dry_run=args.dry_run)
    if args.dry_run:
        print(dump_yaml(result), end="")
        return 0
    print(f"{args.out}: step {result.step}, {result.images_per_second:.0f} images/s, samples in {args.out / 'samples'}")
    return 130 if result.interrupted else 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from genforge.images import to_uint8
    from genforge.sampling import load_sampler, save_samples
    from genforge.training.device import pick_device

    if args.n <= 0:
        raise GenforgeError(f"--n must be positive, got {args.n}")
    sampler = load_sampler(args.run, pick_device(args.device))
    g = torch.Generator(device=sampler.device).manual_seed(args.seed)
    nrow = args.nrow
    if args.interpolate is not None:
        images = sampler.interpolate(args.n, args.interpolate, g, truncation=args.truncation)
        nrow = args.interpolate
    else:
        options = dict(truncation=args.truncation)
        if sampler.kind == "prior":
            options.update(
                class_label=args.class_label,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                steps=args.steps,
                cfg_scale=args.cfg_scale,
                use_cache=not args.no_cache,
            )
        else:
            for flag in ("class_label", "temperature", "top_k", "top_p", "steps", "cfg_scale"):
                if getattr(args, flag) is not None:
                    name = "class" if flag == "class_label" else flag.replace("_", "-")
                    raise GenforgeError(f"--{name} applies to prior runs; this is a GAN run")
        images = sampler.sample(args.n, g, **options)
    path = save_samples(to_uint8(images), args.out, args.format, nrow=nrow)
    print(f"wrote {len(images)} samples to {path}")
    return 0


def _vqvae_tool(args: argparse.Namespace) -> int:
    from genforge import vqtools
    from genforge.training.device import pick_device

    if args.n < 0:
        raise GenforgeError(f"--n must be >= 0, got {args.n}")
    device = pick_device(args.device)
    if args.command == "reconstruct":
        scores = vqtools.reconstruct(
            args.run, args.out, data=args.data, split=args.split, n=args.n or 32, device=device
        )
        print(
            f"wrote originals | reconstructions to {args.out}; " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
    else:
        count, grid = vqtools.encode(args.run, args.out, data=args.data, split=args.split, n=args.n, device=device)
        print(f"wrote {count} code grids of {grid[0]}x{grid[1]} to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from genforge import evaluation
    from genforge.training.device import pick_device

    device = pick_device(args.device)
    if args.real_vs_real:
        if args.data is None:
            raise GenforgeError("--real-vs-real needs --data NAME")
        scores = evaluation.real_vs_real(args.data, n=args.n, features=args.features, device=device)
    elif args.run is None:
        raise GenforgeError("evaluate needs a RUN (or --real-vs-real --data NAME)")
    else:
        scores = evaluation.evaluate(
            args.run,
            data=args.data,
            n=args.n,
            features=args.features,
            device=device,
            seed=args.seed,
            record=not args.no_record,
        )
    if args.json:
        print(json.dumps(scores))
    else:
        for key, value in scores.items():
            print(f"{key:>26}: {value:.4f}" if isinstance(value, float) else f"{key:>26}: {value}")
    return 0


def _evaluator(args: argparse.Namespace) -> int:
    from genforge import evaluation
    from genforge.training.device import pick_device

    model, info = evaluation.train_evaluator(args.data, pick_device(args.device), epochs=args.epochs)
    print(f"classifier for {args.data}: test accuracy {info.get('test_accuracy', float('nan')):.4f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from genforge import report

    if args.command == "compare":
        summaries = [report.collect(run, data=args.data) for run in args.runs]
        path = report.write_report(summaries, args.out, title=args.title)
    else:
        path = report.write_report(
            [report.collect(args.run)], args.out or args.run / "report.html", title=f"genforge report: {args.run.name}"
        )
    print(f"wrote {path}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from genforge import data as gdata

    if args.data_command == "fetch":
        print(gdata.fetch(args.name))
        return 0
    if args.fit != "none" and args.resolution is None:
        raise GenforgeError("--fit needs --resolution")
    d = gdata.load_dataset(args.source, split=args.split, resolution=args.resolution, fit=args.fit)
    facts = gdata.describe(d)
    if args.json:
        print(json.dumps(facts))
    else:
        for key, value in facts.items():
            print(f"{key:>14}: {value}")
    if args.grid is not None:
        from genforge.images import save_grid

        save_grid(d.images[:64], args.grid)
        print(f"wrote a grid of {min(64, len(d))} examples to {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
