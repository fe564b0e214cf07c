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
    p.add_argument("--preset", default="default", help=f"named starting config: {', '.join(presets)} (default: default)")
    p.add_argument("--config", type=Path, help="YAML file with config sections (data, model, optim, train, ...)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override one config value, e.g. train.batch_size=128")
    p.add_argument("--steps", type=int, help="stop after N steps (train.steps)")
    p.add_argument("--minutes", type=float, help="stop after M minutes of training, summed over resumes (train.minutes)")
    p.add_argument("--batch-size", type=int, help="train.batch_size")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="train.device")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="train.precision")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _flag_overrides(args: argparse.Namespace) -> dict:
    train = {k: v for k, v in {
        "steps": args.steps, "minutes": args.minutes, "batch_size": args.batch_size, "seed": args.seed,
        "device": args.device, "precision": args.precision,
    }.items() if v is not None}
    extra: dict = {"train": train} if train else {}
    if args.data is not None:
        extra["data"] = {"source": args.data}
    return extra


def build_parser() -> argparse.ArgumentParser:
    from genforge.losses import GAN_LOSSES
    from genforge.training.gan import GAN_PRESETS

    parser = argparse.ArgumentParser(prog="genforge", description="Train, sample, evaluate and compare GANs and VQ-VAEs.")
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (resumes when --out holds a checkpoint)")
    families = train.add_subparsers(dest="family", required=True)
    gan = families.add_parser("gan", help=f"DCGAN; losses: {', '.join(GAN_LOSSES)}")
    _train_flags(gan, GAN_PRESETS)

    sample = sub.add_parser("sample", help="sample images from a trained run")
    sample.add_argument("run", type=Path)
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--format", choices=["png", "npz", "png-dir"], default="png", help="grid PNG, .npz array or folder of PNGs")
    sample.add_argument("--nrow", type=int, help="images per row in the grid")
    sample.add_argument("--truncation", type=float, help="GAN: redraw latent entries beyond this magnitude")
    sample.add_argument("--interpolate", type=int, metavar="STEPS", help="GAN: --n strips of STEPS images between two latents")
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

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
    raise AssertionError(args.command)


def _train(args: argparse.Namespace) -> int:
    from genforge.config import dump_yaml, resolve
    from genforge.training import runs
    from genforge.training.gan import GAN_PRESETS, GANRunConfig

    if args.family == "gan":
        config = resolve(GANRunConfig, GAN_PRESETS, args.preset, args.config, args.sets, _flag_overrides(args))
        result = runs.train_gan(config, args.out, progress=not args.quiet, dry_run=args.dry_run)
    else:
        raise AssertionError(args.family)
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
        images = sampler.sample(args.n, g, truncation=args.truncation)
    path = save_samples(to_uint8(images), args.out, args.format, nrow=nrow)
    print(f"wrote {len(images)} samples to {path}")
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
