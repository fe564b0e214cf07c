"""Starting and resuming runs: the library side of ``genforge train FAMILY``, for every family.

Order matters for the "nothing half-written" rule: the config is resolved and checked, the data
loaded and checked, an existing run's config compared, and only then is the run folder locked
and touched.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from genforge import checkpoint as ckpt
from genforge.config import dump_yaml, to_dict
from genforge.errors import GenforgeError
from genforge.runfolder import RunLock, append_record, atomic_write, clean_temporary, inside, record
from genforge.training.batches import Batches, on_device
from genforge.training.evaluator import training_evaluator
from genforge.training.loop import RunResult, run
from genforge.training.precision import Choice, choose, pick_device

# Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE = {
    "steps",
    "minutes",
    "device",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "eval_samples",
    "compile",
    "grid_images",
    "precision",
    "channels_last",
    "probe_seconds",
}


def train(
    spec,
    config: Any,
    out: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    dry_run: bool = False,
) -> RunResult | Any:
    """Train (or resume) a run of family ``spec`` into ``out``.

    Returns the RunResult, or with ``dry_run`` the resolved config (data-decided fields filled).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GenforgeError(f"{out}: exists and is not a folder; pick another --out")
    prepared = spec.prepare(config, progress)
    config = prepared.config
    if dry_run:
        return config
    for note in prepared.notes:
        _say(progress, note)
    saved = check_resume(out, spec, to_dict(config))
    device = pick_device(config.train.device)
    with RunLock(out):
        clean_temporary(out)
        if spec.training_data is not None:
            spec.training_data(prepared, out, device, progress)
        examples = on_device(prepared.images, device)
        labels = on_device(prepared.labels, device) if prepared.labels is not None else None
        batches = Batches(examples, labels, config.train.batch_size, config.train.seed, device)
        choice = _precision(spec, prepared, device, saved, batches, progress)
        atomic_write(out / "config.yaml", dump_yaml(config))
        prepared.config = _with_choice(config, choice)  # what the trainer is built with
        trainer = spec.build(prepared, device, choice.dtype)
        batches.channels_last = choice.channels_last
        batches.per_step = getattr(trainer, "batches_per_step", 1)
        _say(progress, f"training {spec.name} on {device}, {choice.describe()} -> {out}")
        evaluate = training_evaluator(trainer, prepared, progress) if config.train.eval_every else None
        result = run(
            trainer,
            batches,
            config.train,
            out,
            kind=spec.name,
            config=to_dict(config),
            state={"precision": {"precision": choice.precision, "channels_last": choice.channels_last}},
            evaluate=evaluate,
            progress=progress,
            stop_after=stop_after,
            resume_from=saved,
        )
        if spec.finish is not None and not result.interrupted:
            scores = spec.finish(out, prepared, device, progress)
            if scores:
                append_record(out, record("eval", result.step, scores))
                result.last.update(scores)
    return result


def check_resume(out: Path, spec, config: dict[str, Any]) -> ckpt.Checkpoint | None:
    """If ``out`` holds a run, make sure it is of this family and trains the same thing."""
    found = ckpt.find(out) if (out / "checkpoints").is_dir() else None
    if found is None:
        return None
    if not inside(out, found):
        raise GenforgeError(f"{found}: lies outside the run folder {out}; refusing to resume from it")
    saved = ckpt.load(found, kind=spec.name)
    old = spec.migrate(saved.config) if spec.migrate is not None else saved.config
    differences = _differences(old, config)
    if differences:
        key, before, now = differences[0]
        raise GenforgeError(
            f"{out} holds a run with {key}={before!r}, this command asks for {now!r}; "
            "resume with the same settings or train into a new --out folder"
        )
    return saved


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if prefix == "train." and key in RESUMABLE:
                continue
            if prefix == "data." and key in ("resolution", "fit") and old.get(key) and new.get(key) in (0, "auto"):
                continue  # "follow the data" resolves to what the run recorded
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _precision(spec, prepared, device, saved: ckpt.Checkpoint | None, batches: Batches, progress: bool) -> Choice:
    """A resumed run keeps the precision it started with (bit-identical resume); a new run
    takes the configured one or measures (cached per machine)."""
    if saved is not None and isinstance(saved.state.get("precision"), dict):
        chosen = saved.state["precision"]
        return Choice(chosen["precision"], bool(chosen["channels_last"]), "resumed")
    if saved is not None:  # a genforge 0.1 run: its config holds the concrete values
        train = prepared.config.train
        precision = train.precision if train.precision != "auto" else "fp32"
        return Choice(precision, bool(train.channels_last), "resumed")

    def batch(per_step: int):
        batches.per_step = per_step
        return batches.get(0)

    return choose(spec, prepared, device, batch, progress=progress)


def _with_choice(config: Any, choice: Choice) -> Any:
    """The config the trainer is built with: the chosen precision and layout made concrete."""
    train = replace(config.train, precision=choice.precision, channels_last=choice.channels_last)
    return replace(config, train=train)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)
