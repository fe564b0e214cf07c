"""Starting and resuming runs: the library side of ``genforge train FAMILY``, for every family.

Order matters for the "nothing half-written" rule: the config is resolved and checked, the data
loaded and checked, an existing run's config compared, and only then is the run folder locked
and touched.
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from genforge import checkpoint as ckpt
from genforge.config import TrainConfig, dump_yaml, from_dict, merge, nest, to_dict
from genforge.errors import GenforgeError
from genforge.progress import SILENT, Reporter
from genforge.runfolder import RunFolder, RunLock, append_record, atomic_write, clean_temporary, inside, record
from genforge.training import distributed, tensorboard
from genforge.training.api import Family, Prepared
from genforge.training.batches import Batches, on_device
from genforge.training.devices import pick_device
from genforge.training.evaluator import training_evaluator
from genforge.training.loop import RunResult, run
from genforge.training.probe import Choice, choose

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
    "tensorboard",
    "rank_timeout_minutes",
}
# Settings added after a run was started: absent from its config, they are taken at their default.
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def train(
    spec: Family,
    config: Any,
    out: str | Path,
    *,
    reporter: Reporter = SILENT,
    stop_after: int | None = None,
    dry_run: bool = False,
) -> RunResult | Any:
    """Train (or resume) a run of family ``spec`` into ``out``.

    Returns the RunResult, or with ``dry_run`` the resolved config (data-decided fields filled).
    ``reporter`` receives what the run has to say (silent by default).
    Under torchrun every process calls this: rank 0 alone prints and writes the run folder, and
    every rank resumes from the checkpoint rank 0 found (``out`` must then be on a filesystem all
    machines share).
    """
    out = Path(out)
    world = distributed.from_environment()
    reporter = reporter.when(world.main)
    if out.exists() and not out.is_dir():
        raise GenforgeError(f"{out}: exists and is not a folder; pick another --out")
    asked = to_dict(config)  # before prepare, which fills the config in place; a resume may prepare again
    prepared = spec.prepare(config, reporter)
    config = prepared.config
    if dry_run:
        return config
    events = config.train.tensorboard if config.train.tensorboard is not None else tensorboard.available()
    if events and not tensorboard.available():
        raise GenforgeError(f"train.tensorboard is true: {tensorboard.INSTALL_HINT}")
    if prepared.images is not None:  # refused before anything is written (a prior's codes: by Batches, later)
        distributed.check_batch(len(prepared.images), config.train.batch_size, world.size)
    with distributed.session(world, pick_device(config.train.device), config.train.rank_timeout_minutes) as device:
        found = distributed.from_main(_found(out) if world.main else None)
        saved = check_resume(out, spec, to_dict(config), found, decided=prepared.decided)
        prepared = _as_the_run_trained(spec, asked, prepared, saved)
        _check_world(out, saved, world)
        for note in prepared.notes:  # after the resume check: a refused run prints its one error line only
            reporter.say(note)
        with RunLock(out) if world.main else contextlib.nullcontext():
            return _train_locked(spec, prepared, out, device, saved, world, events, reporter, stop_after)


def _train_locked(
    spec: Family,
    prepared: Prepared,
    out: Path,
    device,
    saved: ckpt.Checkpoint | None,
    world: distributed.World,
    events: bool,
    reporter: Reporter,
    stop_after: int | None,
) -> RunResult:
    config = prepared.config
    if world.main:
        clean_temporary(out)
        spec.training_data(prepared, out, device, reporter)
    distributed.barrier()  # the others read what rank 0 made (the prior's code cache)
    if not world.main:
        spec.training_data(prepared, out, device, reporter)
    examples = on_device(prepared.images, device)
    labels = on_device(prepared.labels, device) if prepared.labels is not None else None
    train_cfg = config.train
    batches = Batches(
        examples,
        labels,
        train_cfg.batch_size,
        train_cfg.seed,
        device,
        rank=world.rank,
        world_size=world.size,
        mirror=prepared.mirror,
    )
    with batches:  # stops the thread that reads batches ahead, however training ends
        return _train_batches(spec, prepared, out, device, saved, world, events, reporter, stop_after, batches)


def _train_batches(
    spec, prepared, out: Path, device, saved, world, events: bool, reporter: Reporter, stop_after, batches
):
    config = prepared.config
    train_cfg = config.train
    choice = _precision(spec, prepared, device, saved, batches, reporter)
    if world.main:
        atomic_write(RunFolder(out).config, dump_yaml(config))
    prepared.config = _with_choice(config, choice)  # what the trainer is built with
    trainer = spec.build(prepared, device, choice.dtype)
    batches.channels_last = choice.channels_last
    batches.per_step = trainer.batches_per_step
    processes = f", {world.size} processes x {train_cfg.batch_size // world.size} images" if world.distributed else ""
    reporter.say(
        f"training {spec.name} on {device}, {choice.describe()}, batch {train_cfg.batch_size}{processes} -> {out}"
    )
    evaluate = None
    if train_cfg.eval_every:
        if trainer.evaluation_samples is None:
            raise GenforgeError("train.eval_every applies to families that generate images; set it to 0 for this one")
        if world.main:  # evaluation runs once, on rank 0
            evaluate = training_evaluator(trainer, prepared, reporter)
    state = {
        "precision": {"precision": choice.precision, "channels_last": choice.channels_last},
        "world_size": world.size,
    }
    sink = tensorboard.EventSink.open(out, events and world.main, step=saved.step if saved is not None else 0)
    with sink:
        result = run(
            trainer,
            batches,
            config.train,
            out,
            kind=spec.name,
            config=to_dict(config),
            state=state,
            evaluate=evaluate,
            reporter=reporter,
            stop_after=stop_after,
            resume_from=saved,
            sink=sink,
        )
        if not result.interrupted and world.main:
            scores = spec.finish(out, prepared, device, reporter)
            if scores:
                append_record(out, record("eval", result.step, scores))
                sink.evaluation(result.step, scores)
                result.last.update(scores)
    return result


def _found(out: Path) -> str | None:
    """The checkpoint a run in ``out`` resumes from (rank 0 looks; every rank loads the same)."""
    found = ckpt.find(out) if RunFolder(out).checkpoints.is_dir() else None
    return None if found is None else str(found)


def _check_world(out: Path, saved: ckpt.Checkpoint | None, world) -> None:
    """A run resumes with the number of processes it was trained with: the batches' union would be
    the same, but batch-norm statistics, the codebook's restarts and the order of float sums
    would not, so another number would not continue the same training."""
    if saved is None:
        return
    before = int(saved.state.get("world_size", 1))
    if before != world.size:
        how = "one process" if before == 1 else f"{before} processes (torchrun: WORLD_SIZE {before})"
        now = "one" if world.size == 1 else str(world.size)
        raise GenforgeError(
            f"{out} was trained by {how}, this command starts {now}; resume it with the same number of "
            "processes or train into a new --out folder"
        )


def check_resume(
    out: Path, spec: Family, config: dict[str, Any], found: str | None, decided: tuple[str, ...] = ()
) -> ckpt.Checkpoint | None:
    """If ``out`` holds a run (its checkpoint ``found``, see ``_found``), make sure it is of this
    family and trains the same thing. The ``decided`` keys (filled from the data where the command
    left them null) may differ: the run keeps what it trained with (``_as_the_run_trained``)."""
    if found is None:
        return None
    found = Path(found)
    if not found.exists():
        raise GenforgeError(
            f"{found}: rank 0 resumes from it but this process does not see it; --out must be on a "
            "filesystem every machine of the job shares"
        )
    if not inside(out, found):
        raise GenforgeError(f"{found}: lies outside the run folder {out}; refusing to resume from it")
    saved = ckpt.load(found, kind=spec.name)
    # Through today's config class: an option added since the run started reads as its default
    # (the family's migrate gives it the value the run trained with where that differs).
    old = to_dict(spec.config_of(saved))
    differences = [d for d in _differences(old, config) if d[0] not in decided]
    if differences:
        key, before, now = differences[0]
        raise GenforgeError(
            f"{out} holds a run with {key}={before!r}, this command asks for {now!r}; "
            "resume with the same settings or train into a new --out folder"
        )
    return saved


def _as_the_run_trained(
    spec: Family, asked: dict[str, Any], prepared: Prepared, saved: ckpt.Checkpoint | None
) -> Prepared:
    """A resumed run keeps the values it trained with where the data decides a default now: a
    run saved before ``augment.mirror`` defaulted to on for unlabelled data resumes without
    flips. Such keys are prepared again, set to the stored values, and said in one line each."""
    if saved is None or not prepared.decided:
        return prepared
    stored, now = to_dict(spec.config_of(saved)), to_dict(prepared.config)
    kept = {key: _at(stored, key) for key in prepared.decided if _at(stored, key) != _at(now, key)}
    if not kept:
        return prepared
    for key, value in kept.items():
        asked = merge(asked, nest(key.split("."), value))
    # the data was read (and its cache built) by the first prepare
    again = spec.prepare(from_dict(spec.config_class, asked), SILENT)
    again.notes += [
        f"{key}: {value!r} as the run trained (this data's default is {_at(now, key)!r}; resuming keeps it)"
        for key, value in kept.items()
    ]
    return again


def _at(values: dict[str, Any], key: str) -> Any:
    """``values["augment"]["mirror"]`` for the key "augment.mirror" (None where it is missing)."""
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if prefix == "train." and (
                key in RESUMABLE or (key not in old and new.get(key) == TRAIN_DEFAULTS.get(key))
            ):
                continue
            if prefix == "data." and key in ("resolution", "fit") and old.get(key) and new.get(key) in (0, "auto"):
                continue  # "follow the data" resolves to what the run recorded
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _precision(
    spec: Family, prepared: Prepared, device, saved: ckpt.Checkpoint | None, batches: Batches, reporter: Reporter
) -> Choice:
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

    return choose(spec, prepared, device, batch, reporter=reporter)


def _with_choice(config: Any, choice: Choice) -> Any:
    """The config the trainer is built with: the chosen precision and layout made concrete."""
    train = replace(config.train, precision=choice.precision, channels_last=choice.channels_last)
    return replace(config, train=train)
