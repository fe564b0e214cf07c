"""The ``genforge`` command line: parses arguments, dispatches through the family registry and
the commands package, prints. No logic of its own.

It is also the one error boundary: a ``GenforgeError`` or an operating-system error (disk full,
permission denied, a folder where a file belongs) becomes one ``genforge: error:`` line and exit
status 2; nothing reaches the user as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from genforge import __version__, families
from genforge import data as gdata
from genforge.commands import reconstruct
from genforge.commands.compare import compare, report
from genforge.commands.demo import default_out, run_demo
from genforge.commands.evaluate import evaluate, real_vs_real
from genforge.commands.evaluate import table as evaluate_table
from genforge.commands.export import FORMATS as EXPORT_FORMATS
from genforge.commands.export import export
from genforge.commands.sample import sample
from genforge.commands.tune import TUNE_SEED, table, tune
from genforge.config import DEVICES, FITS, PRECISIONS, dump_yaml, merge, nest, parse_set, read_yaml
from genforge.errors import GenforgeError
from genforge.families.registry import count, number  # argument types, shared with the families' flags
from genforge.images import save_grid
from genforge.metrics.extractors import FEATURES, train_evaluator
from genforge.progress import Progress
from genforge.training import distributed
from genforge.training.loop import DEFAULT_MINUTES, describe_budget
from genforge.training.precision import pick_device
from genforge.training.runs import train


def seed(text: str) -> int:
    """A seed: an integer in 0 .. 2**63 - 1 (what torch's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**63 - 1, got {value}")
    return value


def _device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default, choices=DEVICES, help="auto picks CUDA, then MPS, then CPU")


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
    _device(p, default=None)
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


FIT_HELP = "how images reach --resolution (default none: they must already have it)"
OPTION = "option:"  # the namespace prefix of the families' sampling flags (their option key follows)


class _FamilyFlag(argparse.Action):
    """A family's sampling flag (``SampleFlag``): stores its value under ``option:KEY``; a former
    spelling also leaves a notice, printed once the samples are written."""

    def __init__(self, option_strings, dest, canonical: str, old: tuple[str, ...] = (), **kwargs):
        self.canonical, self.old = canonical, old
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        if option_string in self.old:
            notice = f"genforge: {option_string} is now {self.canonical} (the old spelling still works, for now)"
            namespace.notices = [*getattr(namespace, "notices", []), notice]


def _sample_flags(p: argparse.ArgumentParser) -> None:
    """The union of the families' sampling flags, each with what it means for each family."""
    declared: dict[str, list[tuple[str, families.SampleFlag]]] = {}
    for name in families.names():
        for flag in families.get(name).sample_flags:
            declared.setdefault(flag.flag, []).append((name, flag))
    for text, uses in declared.items():
        first = uses[0][1]
        for name, flag in uses[1:]:
            if (flag.key, flag.type, flag.value, flag.old) != (first.key, first.type, first.value, first.old):
                raise GenforgeError(f"families {uses[0][0]} and {name} declare {text} differently")
        kwargs: dict = {"nargs": 0, "const": first.value} if first.type is None else {"type": first.type}
        p.add_argument(
            text,
            *first.old,
            action=_FamilyFlag,
            canonical=text,
            old=first.old,
            dest=OPTION + first.key,
            default=None,
            metavar=first.metavar,
            help=_per_family(uses) + "".join(f" ({old}: its old name, still read)" for old in first.old),
            **kwargs,
        )


def _per_family(uses: list[tuple[str, families.SampleFlag]]) -> str:
    """'gan: ...; stylegan2: ...' (families that say the same thing share one entry)."""
    helps: dict[str, list[str]] = {}
    for name, flag in uses:
        helps.setdefault(flag.help, []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in helps.items())


def _given_options(args: argparse.Namespace) -> dict:
    """The families' sampling flags given on the command line, by option key."""
    return {k[len(OPTION) :]: v for k, v in vars(args).items() if k.startswith(OPTION) and v is not None}


def _check_sample_flags(run: Path, given: dict) -> None:
    """A sampling flag the run's family does not declare is one error line, before the model loads."""
    spec = families.family_of(run)
    if spec is None or not spec.sample_flags or not given:
        return  # a family with no sampling flags (a VQ-VAE): sample() says what is wrong with the run
    takes = {flag.key for flag in spec.sample_flags}
    wrong = [key for key in given if key not in takes]
    if wrong:
        flag = next(f.flag for name in families.names() for f in families.get(name).sample_flags if f.key == wrong[0])
        known = ", ".join(f.flag for f in spec.sample_flags) or "none"
        raise GenforgeError(f"{flag} does not apply to a {spec.name} run (its sampling flags: {known})")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``genforge: error:`` line like every other error."""

    def error(self, message: str):
        raise GenforgeError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genforge", description="Train, sample, evaluate and compare GANs and VQ-VAEs.")
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (resumes when --out holds a checkpoint)")
    kinds = train.add_subparsers(dest="family", required=True)
    for name in families.names():
        spec = families.get(name)
        p = kinds.add_parser(name, help=spec.summary, description=spec.summary)
        _train_flags(p, spec)
        if spec.add_arguments is not None:
            spec.add_arguments(p)

    for name, text in (
        ("reconstruct", "originals beside their VQ-VAE reconstructions"),
        ("encode", "code indices of a dataset (.npz)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", type=Path, help="a VQ-VAE run folder or checkpoint")
        p.add_argument("--data", help="dataset (default: the run's own)")
        p.add_argument("--split", default="test", choices=["train", "test", "all"], help="which split (default test)")
        p.add_argument("--out", type=Path, required=True, help="the file to write")
        default = 32 if name == "reconstruct" else 0
        p.add_argument("--n", type=count(0), default=default, help=f"images to use (0 = all; default {default})")
        _device(p)

    sample = sub.add_parser("sample", help="sample images from a trained run")
    sample.add_argument("run", type=Path, help="a run folder or checkpoint of a family that generates")
    sample.add_argument("--n", type=count(1), default=64, help="how many images (default 64)")
    sample.add_argument("--out", type=Path, required=True, help="the file (or, with --format png-dir, folder) to write")
    sample.add_argument("--seed", type=seed, default=0, help="seed of the draws (default 0)")
    sample.add_argument("--format", choices=["png", "npz", "png-dir"], default="png", help="grid PNG, .npz or PNGs")
    sample.add_argument("--nrow", type=count(1), help="images per row in the grid")
    sample.add_argument("--class", dest="class_label", type=count(0), help="class to generate (conditional models)")
    sample.add_argument("--untuned", action="store_true", help="ignore the run's sampling.json (genforge tune)")
    _sample_flags(sample)
    _device(sample)

    tn = sub.add_parser(
        "tune", help="choose a prior's or a GAN's sampling settings by measurement (writes RUN/sampling.json)"
    )
    tn.add_argument("run", type=Path, help="a prior or GAN run folder")
    tn.add_argument("--n", type=count(2), default=2000, help="samples per setting (default 2000)")
    tn.add_argument("--features", choices=FEATURES, help="default: classifier if the data has labels, else inception")
    tn.add_argument("--rounds", type=count(1), default=1, help="passes of the coordinate search (default 1)")
    tn.add_argument("--seed", type=seed, default=TUNE_SEED, help=f"seed of every setting's draws (default {TUNE_SEED})")
    tn.add_argument("--quiet", action="store_true", help="no progress output")
    _device(tn)

    ev = sub.add_parser("evaluate", help="score a run (or a folder/.npz of images) against real data")
    ev.add_argument("run", type=Path, nargs="?", help="run folder, or a folder/.npz of images from any tool")
    ev.add_argument("--data", help="real data to compare with (default: the run's own)")
    ev.add_argument("--n", type=count(1), default=10_000, help="samples to generate and score (default 10000)")
    ev.add_argument("--features", choices=FEATURES, help="default: classifier if the data has labels, else inception")
    ev.add_argument(
        "--real-vs-real", action="store_true", help="score a train subset against the test split: the floor"
    )
    ev.add_argument("--seed", type=seed, default=0, help="seed of the samples (default 0)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--no-record", action="store_true", help="do not append the result to the run's metrics.jsonl")
    _device(ev)

    evaluator = sub.add_parser("evaluator", help="the classifier feature network of a dataset")
    esub = evaluator.add_subparsers(dest="evaluator_command", required=True)
    et = esub.add_parser("train", help="train (or show the cached) classifier on the dataset's labelled train split")
    et.add_argument("--data", required=True, help="a named dataset or path with class labels")
    et.add_argument("--epochs", type=count(1), default=3, help="passes over the train split (default 3)")
    _device(et)

    cmp_ = sub.add_parser("compare", help="side-by-side HTML report of several runs")
    cmp_.add_argument("runs", type=Path, nargs="+", help="run folders")
    cmp_.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    cmp_.add_argument("--data", help="only count evaluations made on this data")
    cmp_.add_argument("--title", default="genforge compare", help="the report's heading")
    rep = sub.add_parser("report", help="HTML report of one run (default: RUN/report.html)")
    rep.add_argument("run", type=Path, help="a run folder")
    rep.add_argument("--out", type=Path, help="the HTML file to write (default RUN/report.html)")

    demo = sub.add_parser("demo", help="the main job: GAN vs VQ-VAE + prior, same budget, one report")
    demo.add_argument("--minutes", type=number, default=15.0, help="total time budget (default 15)")
    demo.add_argument(
        "--out",
        type=Path,
        help="folder of the three runs and the report (default runs/demo, runs/demo-DATA for other data)",
    )
    demo.add_argument("--data", default="fashion-mnist", help="named dataset or path (default fashion-mnist)")
    demo.add_argument("--n", type=count(1), help="samples per evaluation (default 10000; 1000 with inception)")
    demo.add_argument("--features", choices=FEATURES, help="default: classifier if labelled, but emoji: inception")
    _device(demo)
    demo.add_argument("--quiet", action="store_true", help="no progress output")

    exp = sub.add_parser("export", help="a run's generator (or VQ-VAE encoder/decoder) as an ONNX file")
    exp.add_argument("run", type=Path, help="a run folder or checkpoint")
    exp.add_argument("--format", default="onnx", choices=EXPORT_FORMATS, help="file format (default onnx)")
    exp.add_argument("--out", type=Path, required=True, help="the file to write, e.g. generator.onnx")
    exp.add_argument("--part", help="what to export (GAN: generator; VQ-VAE: decoder or encoder); default the first")
    exp.add_argument("--no-check", action="store_true", help="skip running the file in onnxruntime beside PyTorch")

    data = sub.add_parser("data", help="inspect or locate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser("info", help="count, shape, channels, classes, value range")
    info.add_argument("source", help="a named dataset or a path genforge reads")
    info.add_argument("--split", default="train", choices=["train", "test", "all"], help="which split (default train)")
    info.add_argument("--resolution", type=count(1), help="fit every image to this square side")
    info.add_argument("--fit", default="none", choices=[f for f in FITS if f != "auto"], help=FIT_HELP)
    info.add_argument("--grid", type=Path, help="also write a grid of examples to this PNG")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fetch = dsub.add_parser("fetch", help="say where a named dataset is, or how to install it (never downloads)")
    fetch.add_argument("name", help="fashion-mnist, mnist or emoji")
    pack = dsub.add_parser("pack", help="pack a dataset once into a folder that training reads batch by batch")
    pack.add_argument("source", help="a named dataset or a path genforge reads (folder, zip, IDX, CIFAR, npz)")
    pack.add_argument("--out", type=Path, required=True, help="the packed dataset's folder")
    pack.add_argument("--split", default="train", choices=["train", "test", "all"], help="which split (default train)")
    pack.add_argument("--resolution", type=count(1), help="fit every image to this square side")
    pack.add_argument("--fit", default="none", choices=[f for f in FITS if f != "auto"], help=FIT_HELP)
    pack.add_argument("--channels", type=int, choices=[1, 3], help="convert to grey (1) or colour (3)")
    pack.add_argument("--chunk", type=count(1), default=1024, help="images read and written at a time")
    pack.add_argument("--overwrite", action="store_true", help="replace an existing packed dataset at --out")
    pack.add_argument("--json", action="store_true", help="print a JSON summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(build_parser().parse_args(argv))
    except GenforgeError as e:
        print(f"genforge: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the operating system said no: disk full, permissions, a folder for a file
        where = f"{e.filename}: " if e.filename else ""
        print(f"genforge: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genforge: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "train": _train,
        "sample": _sample,
        "data": _data,
        "reconstruct": _vqvae_tool,
        "encode": _vqvae_tool,
        "evaluate": _evaluate,
        "evaluator": _evaluator,
        "compare": _report,
        "report": _report,
        "demo": _demo,
        "export": _export,
        "tune": _tune,
    }
    return handlers[args.command](args)


def _train(args: argparse.Namespace) -> int:
    spec = families.get(args.family)
    extra = _flag_overrides(args)
    if spec.from_arguments is not None:
        extra.update(spec.from_arguments(args))
    config = spec.resolve(args.preset, args.config, args.sets, extra)
    if _trains_on_data(spec) and not _names_data(args):
        raise GenforgeError(
            f"train {spec.name} needs --data: a named dataset (fashion-mnist, mnist, emoji) or a path to images "
            "(folder, zip, IDX, CIFAR, .npz, packed); or data.source in --config or --set"
        )
    result = train(spec, config, args.out, progress=not args.quiet, dry_run=args.dry_run)
    if args.dry_run:
        print(dump_yaml(result), end="")
        print(f"# {describe_budget(result.train)}")
        return 0
    if distributed.from_environment().main:  # under torchrun, one summary for the job
        speed = f"{result.images_per_second:.0f} images/s"
        print(f"{args.out}: step {result.step}, {speed}, samples in {args.out / 'samples'}")
    return 130 if result.interrupted else 0


def _sample(args: argparse.Namespace) -> int:
    options = _given_options(args)
    _check_sample_flags(args.run, options)
    interpolate = options.pop("interpolate", None)  # sample's own argument, not the model's option
    options.update(class_label=args.class_label, tuned=False if args.untuned else None)
    n, path, note = sample(
        args.run,
        args.n,
        args.out,
        fmt=args.format,
        seed=args.seed,
        nrow=args.nrow,
        interpolate=interpolate,
        options=options,
        device=pick_device(args.device),
    )
    print(f"wrote {n} samples to {path}")
    if note:
        print(note)
    for notice in getattr(args, "notices", []):
        print(notice, file=sys.stderr)
    return 0


def _tune(args: argparse.Namespace) -> int:
    result = tune(
        args.run,
        n=args.n,
        features=args.features,
        seed=args.seed,
        rounds=args.rounds,
        device=pick_device(args.device),
        progress=not args.quiet,
    )
    print(table(result))
    chosen = ", ".join(f"{k} {'off' if v is None else v}" for k, v in result.chosen.items())
    print(f"chosen: {chosen}; wrote {result.path} (sample and evaluate use it; --untuned ignores it)")
    return 0


def _vqvae_tool(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    where = dict(data=args.data, split=args.split, device=device)
    if args.command == "reconstruct":
        scores = reconstruct.reconstruct(args.run, args.out, n=args.n, **where)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        print(f"wrote originals | reconstructions to {args.out}; {shown}")
    else:
        n, grid = reconstruct.encode(args.run, args.out, n=args.n, **where)
        print(f"wrote {n} code grids of {grid[0]}x{grid[1]} to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    if args.real_vs_real:
        if args.data is None:
            raise GenforgeError("--real-vs-real needs --data NAME")
        scores = real_vs_real(args.data, n=args.n, features=args.features, device=device)
    elif args.run is None:
        raise GenforgeError("evaluate needs a RUN (or --real-vs-real --data NAME)")
    else:
        scores = evaluate(
            args.run,
            data=args.data,
            n=args.n,
            features=args.features,
            device=device,
            seed=args.seed,
            record_result=not args.no_record,
        )
    print(json.dumps(scores) if args.json else evaluate_table(scores))
    return 0


def _evaluator(args: argparse.Namespace) -> int:
    _, info = train_evaluator(args.data, pick_device(args.device), epochs=args.epochs)
    print(f"classifier for {args.data}: test accuracy {info.get('test_accuracy', float('nan')):.4f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.command == "compare":
        path = compare(args.runs, args.out, data=args.data, title=args.title)
    else:
        path = report(args.run, args.out)
    print(f"wrote {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else default_out(args.data)
    result = run_demo(out, args.minutes, args.data, args.n, args.device, not args.quiet, features=args.features)
    print(f"wrote {result.report}")
    return 0


def _export(args: argparse.Namespace) -> int:
    path, part, worst = export(args.run, args.out, fmt=args.format, part=args.part, check=not args.no_check)
    checked = ", ".join(f"{name} max |onnxruntime - torch| {value:.2e}" for name, value in worst.items())
    print(f"wrote the {part} of {args.run} to {path}" + (f" ({checked})" if checked else ""))
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        print(gdata.fetch(args.name))
        return 0
    if args.data_command == "pack":
        return _pack(args)
    if args.fit != "none" and args.resolution is None:
        raise GenforgeError("--fit needs --resolution")
    d = gdata.open_dataset(args.source, split=args.split, resolution=args.resolution, fit=args.fit)
    facts = gdata.describe(d)  # streams a packed dataset chunk by chunk
    if args.json:
        print(json.dumps(facts))
    else:
        for key, value in facts.items():
            print(f"{key:>14}: {value}")
    if args.grid is not None:
        save_grid(d.take(np.arange(min(64, len(d)))), args.grid)
        print(f"wrote a grid of {min(64, len(d))} examples to {args.grid}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    if args.fit != "none" and args.resolution is None:
        raise GenforgeError("--fit needs --resolution")
    bars: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:  # the total is known once the source is open
            bars.append(Progress(total=total, unit="image", desc="packing", enabled=not args.json))
        bars[0].update(done - bars[0].n)

    try:
        summary = gdata.pack_dataset(
            args.source,
            args.out,
            split=args.split,
            resolution=args.resolution,
            fit=args.fit,
            channels=args.channels,
            chunk=args.chunk,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(summary))
    else:
        count, height, width, channels = summary["shape"]
        size = summary["bytes"] / 2**30
        print(f"packed {count} images of {width}x{height}x{channels} ({size:.2f} GiB) into {summary['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
