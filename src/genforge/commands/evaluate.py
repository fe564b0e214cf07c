"""``genforge evaluate``: how good is a run (or a set of images from any tool), and is it collapsing?

Picks the feature extractor, loads the real data the way the run saw it, lets the run's family
say what evaluating it means (samples for generators, reconstructions for a VQ-VAE), and records
the result in the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.registry import Command, add_device, add_features, count, seed
from genforge.config import DataConfig
from genforge.data import load_configured, load_dataset
from genforge.errors import GenforgeError
from genforge.families.registry import EvalContext
from genforge.metrics.evaluate import evaluate_samples
from genforge.metrics.extractors import REAL_N, choose_features, get_extractor, reference, reference_images
from genforge.metrics.table import counted
from genforge.progress import SILENT, Reporter
from genforge.runfolder import RunFolder, append_record, record
from genforge.training.devices import pick_device


def is_run(path: Path) -> bool:
    return path.is_dir() and (RunFolder(path).checkpoints.is_dir() or (path / ckpt.META).is_file())


def evaluate(
    target: str | Path,
    *,
    data: str | None = None,
    n: int = 10_000,
    features: str | None = None,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    reporter: Reporter = SILENT,
    record_result: bool = True,
    extra: dict[str, Any] | None = None,
    reference_n: int = REAL_N,
) -> dict[str, Any]:
    """Score a run folder or a folder/.npz of images against up to ``reference_n`` real training
    images (``extractors.reference_indices``: never those ``tune`` scores against).

    ``features`` None: chosen from the data (``choose_features``), said in one line on ``reporter``.
    The result carries ``n`` (samples scored) and ``reference_n`` (real images): a Frechet distance
    or KID means little without them. ``extra`` entries (e.g. the real-vs-real floor) are stored
    with the result.
    """
    if n <= 0:
        raise GenforgeError(f"the number of samples must be positive, got {n}")
    target = Path(target)
    if not is_run(target):  # images from any other tool
        if data is None:
            raise GenforgeError(
                "evaluating a folder or .npz of images needs --data NAME (the real data to compare with)"
            )
        fake = load_dataset(str(target), split="all", reporter=reporter).images[:n]
        fit = "pad" if fake.shape[1] >= 28 else "resize"
        data_cfg = DataConfig(source=data, resolution=fake.shape[1], fit=fit, channels=fake.shape[3])
        features = _features(data, features, reporter)
        extractor = get_extractor(features, data, device, reporter)
        ref = reference(extractor, data_cfg, n=reference_n, reporter=reporter)
        scores = evaluate_samples(fake, ref, extractor, reporter=reporter)
        return {"features": features, "n": len(fake), "reference_n": len(ref.features), **scores, "data": data}

    c = ckpt.load(target, kind=tuple(families.names()), map_location=device)
    spec = families.get(c.kind)
    data_cfg = spec.data_config(c)
    if data is not None:
        data_cfg = replace(data_cfg, source=data)
    features = _features(data_cfg.source, features, reporter)
    extractor = get_extractor(features, data_cfg.source, device, reporter)
    ref = reference(extractor, data_cfg, n=reference_n, reporter=reporter)
    result: dict[str, Any] = {"features": features, "n": n, "reference_n": len(ref.features)}
    result.update({"data": data_cfg.source, "kind": c.kind})  # JSON fields: "kind" is the family
    model = spec.load(c, device)
    ctx = EvalContext(extractor, ref, data_cfg, n, seed, device, reporter, run_dir=target)
    result.update(spec.evaluate(model, ctx))
    result.update(extra or {})
    if record_result:
        append_record(target, record("evaluation", c.step, result))
    return result


def real_vs_real(
    data: str,
    *,
    n: int = 10_000,
    features: str | None = None,
    resolution: int = 0,
    fit: str = "auto",
    device: torch.device = torch.device("cpu"),
    reporter: Reporter = SILENT,
) -> dict[str, Any]:
    """The floor: held-out real images scored as if they were samples, through the same pipeline.

    Data with a test split: train subset vs test split. Single-split data: the first half of
    evaluate's reference images against their second half (as many images each, up to ``n``).
    """
    data_cfg = DataConfig(source=data, resolution=resolution, fit=fit)
    features = _features(data, features, reporter)
    extractor = get_extractor(features, data, device, reporter)
    try:
        test, data_cfg = load_configured(replace(data_cfg, limit=n), split="test", reporter=reporter)
        held_out = test.images
        ref = reference(extractor, data_cfg, reporter=reporter)
    except GenforgeError:
        # evaluate's images (reference_indices), in two halves: the reference is the first
        everything, _, _, _ = reference_images(data_cfg, n=0, reporter=reporter)
        half = min(n, len(everything) // 2)
        ref = reference(extractor, data_cfg, n=half, reporter=reporter)
        held_out = everything.images[half : 2 * half]
    scores = evaluate_samples(held_out, ref, extractor, reporter=reporter)
    counts = {"n": len(held_out), "reference_n": len(ref.features)}
    return {"features": features, **counts, "data": data, "kind": "real-vs-real", **scores}


def _features(source: str, features: str | None, reporter: Reporter) -> str:
    """The feature network (``choose_features``); a choice the data made is said on ``reporter``."""
    asked = features is not None
    features, why = choose_features(source, features)
    if not asked:
        reporter.say(f"features: {features} ({why})")
    return features


def table(scores: dict[str, Any]) -> str:
    """``evaluate``'s printed table: one ``key: value`` line each, the Frechet distance and KID
    with the counts they were measured on ("fd (n=1,000 vs 3,029 real)")."""
    lines = []
    for key, value in scores.items():
        name = key
        if counted(key) and "n" in scores:
            real = f" vs {scores['reference_n']:,} real" if "reference_n" in scores else ""
            name = f"{key} (n={scores['n']:,}{real})"
        lines.append(f"{name:>26}: {value:.4f}" if isinstance(value, float) else f"{name:>26}: {value}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command line: genforge evaluate
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, nargs="?", help="run folder, or a folder/.npz of images from any tool")
    p.add_argument("--data", help="real data to compare with (default: the run's own)")
    p.add_argument("--n", type=count(1), default=10_000, help="samples to generate and score (default 10000)")
    add_features(p, default=None, help="default: classifier if the data has labels, else inception")
    p.add_argument("--real-vs-real", action="store_true", help="score a train subset against the test split: the floor")
    p.add_argument("--seed", type=seed, default=0, help="seed of the samples (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-record", action="store_true", help="do not append the result to the run's metrics.jsonl")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    reporter = Reporter()  # evaluate has no --quiet: its bars and notes always show
    if args.real_vs_real:
        if args.data is None:
            raise GenforgeError("--real-vs-real needs --data NAME")
        scores = real_vs_real(args.data, n=args.n, features=args.features, device=device, reporter=reporter)
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
            reporter=reporter,
        )
    print(json.dumps(scores) if args.json else table(scores))
    return 0


EVALUATE = Command("evaluate", "score a run (or a folder/.npz of images) against real data", add_arguments, run)
