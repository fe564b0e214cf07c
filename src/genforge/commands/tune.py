"""``genforge tune``: choose a run's sampling settings by measurement, and keep them in the run.

For a model with sampling options (a prior: temperature, top-k, top-p or decoding steps,
guidance scale; a GAN: truncation), a coordinate search: starting from the network's defaults,
it moves one option at a time through the values the network proposes (``sampling_space``),
keeping the best, for ``rounds`` passes. Each setting draws ``n`` samples from the same seed (common random numbers:
the settings are compared on the same draws of classes and noise) and is scored like
``genforge evaluate`` scores a run: Frechet distance against the real data in the chosen feature
space, ties (``sampling.TIE``) going to the higher recall + coverage: the "ranked" and "tie-break"
metrics of ``metrics/table.py``, whose ``tuning`` column also says what a candidate keeps. Every
candidate and the choice are written to the run's ``sampling.json``, which ``sample`` and
``evaluate`` then use.

The seed differs from ``evaluate``'s default (0), so a later evaluation does not score the very
samples the choice was made on, and the real images the settings are scored against are training
images ``evaluate`` never reports on (``extractors.reference_indices``; said in one line and
recorded in ``sampling.json`` as ``reference``), so a reported figure is never the one the choice
was tuned on.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.registry import Command, add_device, add_features, count, seed
from genforge.errors import GenforgeError
from genforge.families.registry import EvalContext, score_generator
from genforge.families.sampling import TunedSampling, best, write_sampling
from genforge.metrics.extractors import (
    choose_features,
    describe_tune_reference,
    get_extractor,
    reference,
    reference_images,
    reference_indices,
)
from genforge.metrics.table import shown_on, tune_ranked, tuned
from genforge.progress import SILENT, Reporter
from genforge.runfolder import SAMPLING, RunFolder
from genforge.training.devices import pick_device

TUNE_SEED = 1


@dataclass
class TuneResult:
    path: Path  # the sampling.json written
    chosen: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    default: dict[str, Any] = field(default_factory=dict)  # the network's default options


def tune(
    run: str | Path,
    *,
    n: int = 2000,
    features: str | None = None,
    seed: int = TUNE_SEED,
    rounds: int = 1,
    device: torch.device = torch.device("cpu"),
    reporter: Reporter = SILENT,
) -> TuneResult:
    """Search ``run``'s sampling settings; write and return the result (see the module's docstring)."""
    if n <= 1:
        raise GenforgeError(f"tuning needs at least 2 samples per setting, got {n}")
    if rounds < 1:
        raise GenforgeError(f"rounds must be >= 1, got {rounds}")
    c = ckpt.load(run, kind=tuple(families.names()), map_location=device)
    spec = families.get(c.kind)
    folder = RunFolder.of_checkpoint(c.path)
    if folder is None:
        raise GenforgeError(f"{run}: tune needs a run folder (it writes {SAMPLING} there), not a checkpoint folder")
    run_dir = folder.root
    model = spec.load(c, device)
    if not isinstance(model, TunedSampling):
        raise GenforgeError(f"{run}: a {c.kind} run has no sampling settings to tune (tune applies to priors and GANs)")
    space = model.sampling_space()
    data_cfg = spec.data_config(c)
    asked = features is not None
    features, why = choose_features(data_cfg.source, features)
    if not asked:
        reporter.say(f"features: {features} ({why})")
    extractor = get_extractor(features, data_cfg.source, device, reporter)
    # tune's own training images: evaluate reports on others (reference_indices)
    _, _, n_train, _ = reference_images(data_cfg, purpose="tune", reporter=reporter)
    held = reference_indices(n_train)[1]
    said = describe_tune_reference(held, n_train)
    reporter.say(f"tuning against {said}")
    ref = reference(extractor, data_cfg, reporter=reporter, purpose="tune")
    where = {"split": "train", "start": held.start, "stop": held.stop, "step": held.step, "count": len(held)}
    ctx = EvalContext(extractor, ref, data_cfg, n, seed, device, run_dir=run_dir)  # silent draws

    scored: dict[tuple, dict[str, Any]] = {}
    kept = tuned()  # what each candidate keeps (metrics.table: ranked, tie-break and kept ones)

    def score(options: dict[str, Any]) -> dict[str, Any]:
        key = tuple(sorted(options.items()))
        if key not in scored:
            started = time.perf_counter()
            model.use(options)  # each candidate is drawn with exactly its options, whatever the file says
            values = score_generator(model, ctx)  # as evaluate scores it (and a conditional model's class accuracy)
            entry = {"options": dict(options), **{k: values[k] for k in kept if k in values}}
            entry["seconds"] = round(time.perf_counter() - started, 2)
            scored[key] = entry
            reporter.say(f"  [{len(scored)}/{planned}] {_describe(options)}: {_line(entry)}")
        return scored[key]

    current = {name: values[0] for name, values in space.items()}
    planned = 1 + rounds * sum(len(values) - 1 for values in space.values())  # at most; repeats are not redrawn
    reporter.say(f"tuning {run_dir}: {len(space)} options, {n} samples per setting, {features} features")
    default = score(current)
    for _ in range(rounds):
        for name, values in space.items():
            candidates = [score({**current, name: value}) for value in values]
            current = dict(best(candidates)["options"])
    candidates = list(scored.values())
    chosen = best(candidates)
    result = {
        "step": c.step,
        "data": data_cfg.source,
        "features": features,
        "n": n,
        "reference": {**where, "of": n_train, "said": said},
        "seed": seed,
        "chosen": chosen["options"],
        "scores": {k: v for k, v in chosen.items() if k != "options"},
        "default": {k: v for k, v in default.items() if k != "options"},
        "candidates": candidates,
    }
    path = write_sampling(run_dir, result)
    return TuneResult(path, chosen["options"], candidates, default["options"])


def table(result: TuneResult) -> str:
    """The candidates as a markdown table, best first, the chosen one marked."""
    ranked = tune_ranked()
    rows = sorted(result.candidates, key=lambda c: c[ranked.name], reverse=ranked.better == "higher")
    names = list(rows[0]["options"]) if rows else []
    scores = [k for k in tuned() if rows and k in rows[0]]
    lines = ["| " + " | ".join([*names, *scores, "seconds", ""]) + " |", "|" + "---|" * (len(names) + len(scores) + 2)]
    for row in rows:
        mark = " + ".join(
            word
            for word, options in (("chosen", result.chosen), ("default", result.default))
            if row["options"] == options
        )
        cells = [_value(row["options"][k]) for k in names] + [f"{row[k]:.4g}" for k in scores]
        lines.append("| " + " | ".join([*cells, f"{row['seconds']:.1f}", mark]) + " |")
    return "\n".join(lines)


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in options.items())


def _value(v: Any) -> str:
    return "off" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _line(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k} {entry[k]:.4g}" for k in shown_on("tuning") if k in entry)


# ---------------------------------------------------------------------------------------------
# The command line: genforge tune
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a prior or GAN run folder")
    p.add_argument("--n", type=count(2), default=2000, help="samples per setting (default 2000)")
    add_features(p, default=None, help="default: classifier if the data has labels, else inception")
    p.add_argument("--rounds", type=count(1), default=1, help="passes of the coordinate search (default 1)")
    p.add_argument("--seed", type=seed, default=TUNE_SEED, help=f"seed of every setting's draws (default {TUNE_SEED})")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_device(p)


def run(args: argparse.Namespace) -> int:
    result = tune(
        args.run,
        n=args.n,
        features=args.features,
        seed=args.seed,
        rounds=args.rounds,
        device=pick_device(args.device),
        reporter=Reporter(enabled=not args.quiet),
    )
    print(table(result))
    chosen = ", ".join(f"{k} {'off' if v is None else v}" for k, v in result.chosen.items())
    print(f"chosen: {chosen}; wrote {result.path} (sample and evaluate use it; --untuned ignores it)")
    return 0


TUNE = Command(
    "tune",
    "choose a prior's or a GAN's sampling settings by measurement (writes RUN/sampling.json)",
    add_arguments,
    run,
)
