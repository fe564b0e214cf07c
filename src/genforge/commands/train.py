"""`genforge train FAMILY`: one subcommand per registered family, its flags from the family's
config class (``--data`` only where the config has a data section) and its own ``add_arguments``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from genforge import families
from genforge.commands.registry import Command, add_device, count, number, seed
from genforge.config import PRECISIONS, dump_yaml, merge, nest, parse_set, read_yaml
from genforge.errors import GenforgeError
from genforge.progress import Reporter
from genforge.runfolder import RunFolder
from genforge.training import distributed
from genforge.training.loop import DEFAULT_MINUTES, describe_budget
from genforge.training.runs import train


def _trains_on_data(spec: families.FamilySpec) -> bool:
    """Whether a family's run config has a data section (the prior's data is its VQ-VAE's)."""
    return any(f.name == "data" for f in dataclasses.fields(spec.config_class))


def _train_flags(p: argparse.ArgumentParser, spec: families.FamilySpec) -> None:
    p.add_argument("--out", required=True, type=Path, help="run folder (resumed if it holds a checkpoint)")
    if _trains_on_data(spec):
        p.add_argument(
            "--data",
            help="named dataset (fashion-mnist, mnist, emoji) or a path: image folder or zip, IDX, CIFAR, .npz, "
            "packed (sets data.source; required unless --config or --set gives it)",
        )
        p.add_argument(
            "--resolution", type=count(1), help="square side the images are fitted to (data.resolution; see data.fit)"
        )
    p.add_argument(
        "--preset", default="default", help=f"named starting config: {', '.join(spec.presets)} (default: default)"
    )
    fields = dataclasses.fields(spec.config_class)
    sections = ", ".join(f.name for f in fields if f.default_factory is not dataclasses.MISSING)
    p.add_argument("--config", type=Path, help=f"YAML file with config sections ({sections}) and keys")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override one config value"
    )
    p.add_argument("--steps", type=count(0), help="stop after N steps (train.steps)")
    p.add_argument(
        "--minutes",
        type=number,
        help=f"stop after M minutes of training, summed over resumes (neither given: {DEFAULT_MINUTES:g} minutes)",
    )
    p.add_argument("--batch-size", type=count(1), help="train.batch_size")
    p.add_argument("--seed", type=seed, help="train.seed")
    add_device(p, default=None)
    p.add_argument("--precision", choices=PRECISIONS, help="train.precision (auto: measured on this machine)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the budget, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _flag_overrides(args: argparse.Namespace) -> dict:
    given = {
        "steps": args.steps,
        "minutes": args.minutes,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
    }
    train = {k: v for k, v in given.items() if v is not None}
    extra: dict = {"train": train} if train else {}
    data = {"source": getattr(args, "data", None), "resolution": getattr(args, "resolution", None)}
    if any(v is not None for v in data.values()):
        extra["data"] = {k: v for k, v in data.items() if v is not None}
    return extra


def _names_data(args: argparse.Namespace) -> bool:
    """Whether the command line (--data, --config's data.source, --set) says what to train on."""
    if args.data is not None:
        return True
    values = read_yaml(args.config) if args.config is not None else {}
    for assignment in args.sets:
        values = merge(values, nest(*parse_set(assignment)))
    return isinstance(values.get("data"), dict) and "source" in values["data"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="family", required=True)
    for name in families.names():
        spec = families.get(name)
        family = kinds.add_parser(name, help=spec.summary, description=spec.summary)
        _train_flags(family, spec)
        spec.add_arguments(family)


def run(args: argparse.Namespace) -> int:
    spec = families.get(args.family)
    extra = {**_flag_overrides(args), **spec.from_arguments(args)}
    config = spec.resolve(args.preset, args.config, args.sets, extra)
    if _trains_on_data(spec) and not _names_data(args):
        raise GenforgeError(
            f"train {spec.name} needs --data: a named dataset (fashion-mnist, mnist, emoji) or a path to images "
            "(folder, zip, IDX, CIFAR, .npz, packed); or data.source in --config or --set"
        )
    result = train(spec, config, args.out, reporter=Reporter(enabled=not args.quiet), dry_run=args.dry_run)
    if args.dry_run:
        print(dump_yaml(result), end="")
        print(f"# {describe_budget(result.train)}")
        return 0
    if distributed.from_environment().main:  # under torchrun, one summary for the job
        speed = f"{result.images_per_second:.0f} images/s"
        print(f"{args.out}: step {result.step}, {speed}, samples in {RunFolder(args.out).samples}")
    return 130 if result.interrupted else 0


TRAIN = Command("train", "train a model (resumes when --out holds a checkpoint)", add_arguments, run)
