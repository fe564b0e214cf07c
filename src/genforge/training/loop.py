"""The training loop shared by every family.

A family's trainer (a ``training.api.Trainer``) is a plain object over already-built
modules and optimizers; this loop owns everything around its step: batches, the step/time
budget, progress, ``metrics.jsonl`` records, sample grids, checkpoints (periodic, on
SIGINT/SIGTERM, at the end), the guard against divergence, and resuming from the newest
checkpoint so that an interrupted run ends bit-identical on CPU.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.config import TrainConfig
from genforge.errors import GenforgeError
from genforge.images import make_grid, save_png, to_uint8
from genforge.progress import Progress
from genforge.runfolder import append_record, keep_records_until, record
from genforge.training import distributed
from genforge.training.api import Trainer
from genforge.training.batches import Batches
from genforge.training.tensorboard import EventSink, NullSink

GRID_SCALE = 2  # sample grids are saved at twice their size, as images.save_grid does
# The budget when neither train.steps nor train.minutes is set: a run that ends by itself (its
# final checkpoint, samples and the family's end-of-training scores), said at start.
DEFAULT_MINUTES = 30.0


@dataclass
class RunResult:
    step: int
    interrupted: bool
    seconds: float
    images_per_second: float
    last: dict[str, float]


class Diverged(GenforgeError):
    """A loss became NaN or infinite: the run stops without checkpointing the broken state."""


# ---------------------------------------------------------------------------------------------
# Checkpoint payloads
# ---------------------------------------------------------------------------------------------


def checkpoint_payload(trainer, noise: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"optimizers": {}}
    for name, module in trainer.modules().items():
        tensors.update(ckpt.pack_module(f"model.{name}", module))
    for name, opt in trainer.optimizers().items():
        t, s = ckpt.pack_optimizer(f"optim.{name}", opt)
        tensors.update(t)
        state["optimizers"][name] = s
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in noise.items():
        tensors[f"rng.{name}"] = gen.get_state()
    t, s = trainer.extra_state()
    tensors.update({f"extra.{k}": v for k, v in t.items()})
    state["extra"] = s
    return tensors, state


def check_payload(trainer, noise: dict[str, torch.Generator], c: ckpt.Checkpoint) -> None:
    """Compare a checkpoint with what this trainer would write, before anything is restored.

    Every tensor and state entry the family expects must be there, with the same shape; the
    error names the first thing missing. (Optimizer moments exist only after a first step, so
    they are checked for consistency instead: every parameter with state has all its entries.)
    """
    tensors, state = checkpoint_payload(trainer, noise)
    where = f"{c.path}: incomplete or mismatched checkpoint"
    for name, value in tensors.items():
        if name.startswith("optim."):
            continue
        if name not in c.tensors:
            raise GenforgeError(f"{where}: tensor '{name}' is missing")
        if name.startswith(("model.", "extra.")) and tuple(c.tensors[name].shape) != tuple(value.shape):
            shape = tuple(c.tensors[name].shape)
            raise GenforgeError(f"{where}: tensor '{name}' has shape {shape}, the model has {tuple(value.shape)}")
    unexpected = sorted(k for k in c.tensors if k.startswith("model.") and k not in tensors)
    if unexpected:
        raise GenforgeError(f"{where}: tensor '{unexpected[0]}' does not belong to this model")
    records = trainer.state_records
    _check_entries(state["extra"], c.state.get("extra"), "state entry 'extra", where, records)
    for name in state["optimizers"]:
        saved = (c.state.get("optimizers") or {}).get(name)
        if not isinstance(saved, dict) or not {"param_groups", "scalars"} <= set(saved):
            raise GenforgeError(f"{where}: the state of optimizer '{name}' is missing")
        prefix = f"optim.{name}.state."
        entries: dict[str, set[str]] = {}
        for key in c.tensors:
            if key.startswith(prefix):
                index, field_name = key[len(prefix) :].split(".", 1)
                entries.setdefault(index, set()).add(field_name)
        for key in saved["scalars"]:
            index, field_name = key.split(".", 1)
            entries.setdefault(index, set()).add(field_name)
        fields = set().union(*entries.values()) if entries else set()
        for index, present in sorted(entries.items()):
            if present != fields:
                missing = sorted(fields - present)[0]
                raise GenforgeError(f"{where}: optimizer '{name}' entry {index}.{missing} is missing")
    if "elapsed" not in c.state:
        raise GenforgeError(f"{where}: state entry 'elapsed' is missing")


def _check_entries(expected: Any, saved: Any, label: str, where: str, records: frozenset[str] = frozenset()) -> None:
    """Every entry the trainer would write is in the saved state. Entries named in ``records``
    are values (a config kept for the record, written in whatever words its version used):
    they must be there, but their inside is not compared."""
    if not isinstance(expected, dict):
        return
    if not isinstance(saved, dict):
        raise GenforgeError(f"{where}: {label}' is missing")
    for key, value in expected.items():
        if key not in saved:
            raise GenforgeError(f"{where}: {label}.{key}' is missing")
        if key not in records:
            _check_entries(value, saved[key], f"{label}.{key}", where)


def restore_payload(trainer, noise: dict[str, torch.Generator], c: ckpt.Checkpoint) -> None:
    check_payload(trainer, noise, c)
    for name, module in trainer.modules().items():
        ckpt.unpack_module(f"model.{name}", module, c.tensors)
    for name, opt in trainer.optimizers().items():
        ckpt.unpack_optimizer(f"optim.{name}", opt, c.tensors, c.state["optimizers"][name])
    torch.set_rng_state(c.tensors["rng.torch"])
    for name, gen in noise.items():
        gen.set_state(c.tensors[f"rng.{name}"])
    extra = {k[len("extra.") :]: v for k, v in c.tensors.items() if k.startswith("extra.")}
    trainer.load_extra_state(extra, c.state.get("extra", {}))


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def run(
    trainer: Trainer,
    batches: Batches,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    kind: str,
    config: dict[str, Any],
    state: dict[str, Any] | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    resume_from: ckpt.Checkpoint | None = None,
    sink: EventSink | NullSink | None = None,
) -> RunResult:
    """Train until ``cfg.steps`` / ``cfg.minutes`` is reached or a signal arrives.

    ``state`` is stored in every checkpoint beside the trainer's own (e.g. the precision the
    run chose). ``evaluate(step)`` is called every ``cfg.eval_every`` steps. ``stop_after`` ends
    this session early after that many steps, as an interruption would (tests use it). ``sink``
    receives what is logged as TensorBoard events.

    Under torchrun (see ``distributed``) every rank runs this loop over its share of each batch;
    losses are averaged over the ranks before they are logged, every rank stops at the same step,
    and only rank 0 writes records, samples, events and checkpoints, and evaluates (the others
    wait for it). ``evaluate`` and ``sink`` are given to rank 0 only.
    """
    run_dir = Path(run_dir)
    world = distributed.current()
    sink = sink or NullSink()
    noise = {"noise": trainer.noise}
    step, elapsed = 0, 0.0
    if resume_from is not None:
        restore_payload(trainer, noise, resume_from)
        step, elapsed = resume_from.step, float(resume_from.state.get("elapsed", 0.0))
        _say(progress, f"resuming {run_dir} from step {step} ({elapsed / 60:.1f} min trained)")
    if world.main:
        keep_records_until(run_dir, step)  # what was logged after the checkpoint will be logged again

    total_steps, budget = budget_of(cfg)
    _say(progress, describe_budget(cfg))
    stop = _SignalFlag()

    def time_left() -> float | None:  # asked for every progress line; reads the loop's step and elapsed
        return _time_left(step, total_steps, elapsed, budget)

    bar = Progress(total=total_steps, initial=step, enabled=progress and world.main, unit="step", eta=time_left)
    sums: dict[str, torch.Tensor] = {}
    count, window_start, window_images = 0, time.perf_counter(), 0
    session_start, session_steps = time.perf_counter(), 0
    last: dict[str, float] = {}
    images_per_second = 0.0
    warned: set[str] = set()
    saved = [step if resume_from is not None else -1]

    def save() -> None:
        _check_finite(distributed.average(sums), step, trainer, saved[0], parameters=True)  # the same on every rank
        if world.main:
            tensors, payload_state = checkpoint_payload(trainer, noise)
            payload_state.update(state or {}, elapsed=elapsed)
            ckpt.save(run_dir, step, kind, config, tensors, payload_state, keep=cfg.keep_checkpoints)
        distributed.barrier()  # nobody goes on until the checkpoint is on disk
        saved[0] = step

    def side_work(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Rank 0's evaluations and pictures: they draw from the random streams too, which must
        not change what is trained (nor make rank 0's streams differ from the others')."""
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return work(*args, **kwargs)

    interrupted, time_up = False, elapsed >= budget
    try:
        with stop:
            base_elapsed = elapsed
            while (total_steps is None or step < total_steps) and not time_up:
                x, y = batches.get(step)
                losses = trainer.train_step(x, y)
                step += 1
                session_steps += 1
                for k, v in losses.items():  # summed on the device: no host sync per step
                    sums[k] = sums[k] + v if k in sums else v.detach().clone()
                count += 1
                window_images += x.shape[0] * world.size
                elapsed = base_elapsed + time.perf_counter() - session_start

                if step % cfg.log_every == 0 or (total_steps is not None and step == total_steps):
                    sums = distributed.average(sums)  # every rank logs (and checks) the global batch's losses
                    _check_finite(sums, step, trainer, saved[0])
                    now = time.perf_counter()
                    images_per_second = window_images / max(now - window_start, 1e-9)
                    last = {k: float(v) / count for k, v in sums.items()}
                    last.update(trainer.log_extras())
                    values = {"images_per_s": round(images_per_second, 1), **last}
                    if world.main:
                        append_record(run_dir, record("train", step, values, time=elapsed))
                        sink.scalars(step, values)
                    bar.set_postfix(_postfix(last, images_per_second))
                    warning = trainer.watch(last)
                    if warning and warning not in warned:
                        warned.add(warning)
                        bar.write(f"warning at step {step}: {warning}")
                    sums, count, window_start, window_images = {}, 0, now, 0
                if cfg.eval_every and step % cfg.eval_every == 0 and (evaluate is not None or world.distributed):
                    if evaluate is not None:
                        scores = side_work(evaluate, step)
                        append_record(run_dir, record("eval", step, scores, time=elapsed))
                        sink.evaluation(step, scores)
                        shown = " | ".join(
                            f"{k} {scores[k]:.3g}" for k in ("fd", "recall", "classes_covered") if k in scores
                        )
                        bar.set_description(shown)
                    distributed.barrier()  # evaluation runs once, on rank 0; the others wait for it
                if cfg.sample_every and step % cfg.sample_every == 0:
                    # no grid of a diverged model (the global losses: the same verdict on every rank)
                    _check_finite(distributed.average(sums), step, trainer, saved[0])
                    if world.main:
                        side_work(_save_samples, trainer, run_dir, step, cfg, sink)
                if step % cfg.checkpoint_every == 0:
                    save()
                bar.update(1)
                # One rank's signal or clock stops every rank, at the same step.
                asked = stop.raised is not None or (stop_after is not None and session_steps >= stop_after)
                interrupted, time_up = distributed.any_rank(asked, elapsed >= budget)
                if interrupted:
                    break
        if step != saved[0]:
            save()
        if world.main:
            side_work(_save_samples, trainer, run_dir, step, cfg, sink, final=True)
    except Exception as error:
        reason = distributed.lost_peer(error) if world.distributed else None
        if reason is not None:
            kept = f"the last checkpoint (step {saved[0]}) is intact" if saved[0] >= 0 else "no checkpoint was written"
            raise GenforgeError(
                f"{world.describe()}: another process of this job stopped or stopped answering ({reason}); "
                f"{kept}; run the same command to resume"
            ) from error
        raise
    finally:
        bar.close()
    if interrupted:
        why = f"signal {stop.raised}" if stop.raised else "stop requested"
        _say(progress, f"interrupted ({why}) at step {step}; checkpoint saved; run the same command to resume")
    seconds = time.perf_counter() - session_start
    return RunResult(step, interrupted, seconds, images_per_second, last)


def _check_finite(sums: dict[str, torch.Tensor], step: int, trainer, last_saved: int, parameters: bool = False) -> None:
    """Stop on a NaN or infinite loss (summed since the last check, so none slips through) and,
    before a checkpoint, on a non-finite weight: a checkpoint never holds a diverged model."""
    bad = [k for k, v in sums.items() if not torch.isfinite(v).all()]
    if parameters and not bad:
        for name, module in trainer.modules().items():
            values = [t.detach() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
            if values and not torch.isfinite(torch.stack([v.float().sum() for v in values])).all():
                bad.append(f"the weights of {name}")
    if not bad:
        return
    kept = f"the last checkpoint (step {last_saved}) is intact" if last_saved >= 0 else "no checkpoint was written"
    hint = "lower the learning rate (optim.lr*) or use fp32 (train.precision=fp32)"
    raise Diverged(f"training diverged by step {step}: {', '.join(bad)} became non-finite; {kept}; {hint}")


def _save_samples(
    trainer, run_dir: Path, step: int, cfg: TrainConfig, sink: EventSink | NullSink, final: bool = False
) -> None:
    # A fixed generator: every grid of a run shows the same latent points, so progress is visible.
    g = torch.Generator(device=trainer.device).manual_seed(cfg.seed + 12345)
    grid = make_grid(to_uint8(trainer.sample_grid(cfg.grid_images, g)))  # (H, W, C)
    save_png(grid, run_dir / "samples" / f"step-{step:07d}.png", scale=GRID_SCALE)
    if final:
        save_png(grid, run_dir / "samples" / "final.png", scale=GRID_SCALE)
    if not (final and cfg.sample_every and step % cfg.sample_every == 0):  # else shown already
        sink.image(step, grid)


def _postfix(last: dict[str, float], ips: float) -> str:
    """The latest logging window's losses and images/s (the ETA is added per line by Progress)."""
    return " | ".join([*(f"{k} {v:.3f}" for k, v in list(last.items())[:4]), f"{ips:.0f} img/s"])


def budget_of(cfg: TrainConfig) -> tuple[int | None, float]:
    """(step limit or None, seconds limit or inf): ``DEFAULT_MINUTES`` when neither is set."""
    seconds = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    steps = cfg.steps if cfg.steps > 0 else None
    if steps is None and seconds == math.inf:
        seconds = DEFAULT_MINUTES * 60
    return steps, seconds


def describe_budget(cfg: TrainConfig) -> str:
    """The line training starts with (and ``--dry-run`` ends with): what stops this run."""
    limits = [f"{cfg.steps} steps"] if cfg.steps > 0 else []
    if cfg.minutes > 0:
        limits.append(f"{cfg.minutes:g} min")
    if not limits:
        return f"budget: {DEFAULT_MINUTES:g} min (default; --minutes/--steps to change)"
    ends = ", whichever comes first" if len(limits) == 2 else ""
    return f"budget: {' or '.join(limits)}{ends}"


def _time_left(step: int, total: int | None, elapsed: float, budget: float) -> float | None:
    """Seconds left: by the steps still to go at the rate so far, or the minute budget, whichever
    ends first; None when neither is known yet."""
    left = []
    if total is not None and step:
        left.append((total - step) * elapsed / step)
    if budget != math.inf:
        left.append(budget - elapsed)
    return max(0.0, min(left)) if left else None


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


class _SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (then it checkpoints)."""

    def __init__(self):
        self.raised: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.raised is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.raised = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
