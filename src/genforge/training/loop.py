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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.config import TrainConfig
from genforge.errors import GenforgeError
from genforge.images import make_grid, save_png, to_uint8
from genforge.metrics.table import shown_on
from genforge.progress import SILENT, Progress, Reporter
from genforge.runfolder import RunFolder, append_record, keep_records_until, record
from genforge.training import distributed
from genforge.training.api import Trainer
from genforge.training.batches import Batches
from genforge.training.payload import checkpoint_payload, restore_payload
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
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class LossWindow:
    """The losses since the last log line, summed on the device (no host sync per step)."""

    start: float  # perf_counter() when the window opened
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    images: int = 0  # over every rank

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.detach().clone()
        self.steps += 1
        self.images += images

    def restart(self, now: float) -> None:
        self.sums, self.steps, self.images, self.start = {}, 0, 0, now


@dataclass
class LoopState:
    """Where a training session stands: the loop advances it, its periodic parts read and update it."""

    step: int  # steps trained, by every session of the run
    elapsed: float  # seconds trained, by every session of the run
    saved: int  # the step of the newest checkpoint on disk; -1 when there is none
    session_start: float = field(default_factory=time.perf_counter)
    session_steps: int = 0
    window: LossWindow = field(default_factory=lambda: LossWindow(time.perf_counter()))
    last: dict[str, float] = field(default_factory=dict)  # the latest logged window's losses (and extras)
    images_per_second: float = 0.0  # over the latest logged window
    interrupted: bool = False  # a signal or ``stop_after`` ended the session
    time_up: bool = False  # the minute budget is spent


@dataclass
class Session:
    """What stays fixed while a session runs: the trainer, its settings, and where its results go."""

    trainer: Trainer
    cfg: TrainConfig
    run_dir: Path
    world: distributed.World
    sink: EventSink | NullSink
    bar: Progress

    def side_work(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Rank 0's evaluations and pictures: they draw from the random streams too, which must
        not change what is trained (nor make rank 0's streams differ from the others')."""
        devices = [self.trainer.device] if self.trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return work(*args, **kwargs)


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
    reporter: Reporter = SILENT,
    stop_after: int | None = None,
    resume_from: ckpt.Checkpoint | None = None,
    sink: EventSink | NullSink | None = None,
) -> RunResult:
    """Train until ``cfg.steps`` / ``cfg.minutes`` is reached or a signal arrives.

    ``state`` is stored in every checkpoint beside the trainer's own (e.g. the precision the
    run chose). ``evaluate(step)`` is called every ``cfg.eval_every`` steps. ``stop_after`` ends
    this session early after that many steps, as an interruption would (tests use it). ``sink``
    receives what is logged as TensorBoard events. ``reporter`` shows the budget, the progress line
    and the end of an interrupted session (rank 0's; the other ranks are silent).

    Under torchrun (see ``distributed``) every rank runs this loop over its share of each batch;
    losses are averaged over the ranks before they are logged, every rank stops at the same step,
    and only rank 0 writes records, samples, events and checkpoints, and evaluates (the others
    wait for it). ``evaluate`` and ``sink`` are given to rank 0 only.
    """
    run_dir = Path(run_dir)
    world = distributed.current()
    noise = {"noise": trainer.noise}
    reporter = reporter.when(world.main)
    at = _start(trainer, noise, run_dir, world, resume_from, reporter)
    total_steps, budget = budget_of(cfg)
    stop = Stop(total_steps, budget, stop_after)
    reporter.say(describe_budget(cfg))
    at.time_up = at.elapsed >= budget
    bar = reporter.progress(
        total=total_steps,
        initial=at.step,
        unit="step",
        eta=lambda: stop.time_left(at),  # asked for every progress line
    )
    session = Session(trainer, cfg, run_dir, world, sink or NullSink(), bar)
    checkpoints = Checkpoints(session, noise, kind, config, state or {})
    samples = Samples(session)
    parts = (Log(session, total_steps), Evaluate(session, evaluate), samples, checkpoints)
    try:
        with stop.signals:
            _train(session, batches, at, parts, stop)
        if at.step != at.saved:
            checkpoints.save(at)
        samples.final(at)
    except Exception as error:
        lost = _lost_peer(error, world, at.saved)
        if lost is not None:
            raise lost from error
        raise
    finally:
        bar.close()
    if at.interrupted:
        reporter.say(f"interrupted ({stop.why()}) at step {at.step}; checkpoint saved; run the same command to resume")
    return RunResult(at.step, at.interrupted, time.perf_counter() - at.session_start, at.images_per_second, at.last)


def _start(
    trainer: Trainer,
    noise: dict[str, torch.Generator],
    run_dir: Path,
    world: distributed.World,
    resume_from: ckpt.Checkpoint | None,
    reporter: Reporter,
) -> LoopState:
    """The state a session starts from: a new run's, or the checkpoint's it resumes from."""
    step, elapsed = 0, 0.0
    if resume_from is not None:
        restore_payload(trainer, noise, resume_from)
        step, elapsed = resume_from.step, float(resume_from.state.get("elapsed", 0.0))
        reporter.say(f"resuming {run_dir} from step {step} ({elapsed / 60:.1f} min trained)")
    if world.main:
        keep_records_until(run_dir, step)  # what was logged after the checkpoint will be logged again
    return LoopState(step, elapsed, saved=step if resume_from is not None else -1)


def _train(
    session: Session, batches: Batches, at: LoopState, parts: tuple[Callable[[LoopState], None], ...], stop: Stop
) -> None:
    """Step until the budget is spent or a stop is asked for; after each step, each part in turn."""
    base_elapsed = at.elapsed
    while stop.more(at):
        x, y = batches.get(at.step)
        losses = session.trainer.train_step(x, y)
        at.step += 1
        at.session_steps += 1
        at.window.add(losses, x.shape[0] * session.world.size)
        at.elapsed = base_elapsed + time.perf_counter() - at.session_start
        for part in parts:
            part(at)
        session.bar.update(1)
        stop.check(at)
        if at.interrupted:
            break


class Log:
    """Every ``log_every`` steps and at the last: the window's mean losses (over every rank) and
    the family's extras -> a ``train`` record, TensorBoard scalars, the progress line, and the
    family's warnings (each distinct one once)."""

    def __init__(self, session: Session, total_steps: int | None):
        self.session, self.total_steps = session, total_steps
        self.warned: set[str] = set()

    def __call__(self, at: LoopState) -> None:
        if not (at.step % self.session.cfg.log_every == 0 or at.step == self.total_steps):
            return
        session, window = self.session, at.window
        sums = distributed.average(window.sums)  # every rank logs (and checks) the global batch's losses
        _check_finite(sums, at.step, session.trainer, at.saved)
        now = time.perf_counter()
        at.images_per_second = window.images / max(now - window.start, 1e-9)
        at.last = {k: float(v) / window.steps for k, v in sums.items()}
        at.last.update(session.trainer.log_extras())
        values = {"images_per_s": round(at.images_per_second, 1), **at.last}
        if session.world.main:
            append_record(session.run_dir, record("train", at.step, values, time=at.elapsed))
            session.sink.scalars(at.step, values)
        session.bar.set_postfix(_postfix(at.last, at.images_per_second))
        warning = session.trainer.watch(at.last)
        if warning and warning not in self.warned:
            self.warned.add(warning)
            session.bar.write(f"warning at step {at.step}: {warning}")
        window.restart(now)


class Evaluate:
    """Every ``eval_every`` steps: rank 0 scores samples (an ``eval`` record, the progress line's
    description); the other ranks wait for it."""

    def __init__(self, session: Session, evaluate: Callable[[int], dict[str, float]] | None):
        self.session, self.evaluate = session, evaluate

    def __call__(self, at: LoopState) -> None:
        every = self.session.cfg.eval_every
        if not (every and at.step % every == 0 and (self.evaluate is not None or self.session.world.distributed)):
            return
        if self.evaluate is not None:
            scores = self.session.side_work(self.evaluate, at.step)
            append_record(self.session.run_dir, record("eval", at.step, scores, time=at.elapsed))
            self.session.sink.evaluation(at.step, scores)
            self.session.bar.set_description(
                " | ".join(f"{k} {scores[k]:.3g}" for k in shown_on("training") if k in scores)
            )
        distributed.barrier()  # evaluation runs once, on rank 0; the others wait for it


class Samples:
    """Every ``sample_every`` steps and at the end: rank 0 saves a grid of the trainer's samples."""

    def __init__(self, session: Session):
        self.session = session

    def __call__(self, at: LoopState) -> None:
        session = self.session
        if not (session.cfg.sample_every and at.step % session.cfg.sample_every == 0):
            return
        # no grid of a diverged model (the global losses: the same verdict on every rank)
        _check_finite(distributed.average(at.window.sums), at.step, session.trainer, at.saved)
        if session.world.main:
            session.side_work(_save_samples, session.trainer, session.run_dir, at.step, session.cfg, session.sink)

    def final(self, at: LoopState) -> None:
        if self.session.world.main:
            self.session.side_work(
                _save_samples,
                self.session.trainer,
                self.session.run_dir,
                at.step,
                self.session.cfg,
                self.session.sink,
                final=True,
            )


class Checkpoints:
    """Every ``checkpoint_every`` steps and at the end: rank 0 writes the trainer's payload, the
    run's ``state`` and the time trained, once every rank has found the model finite."""

    def __init__(
        self,
        session: Session,
        noise: dict[str, torch.Generator],
        kind: str,
        config: dict[str, Any],
        state: dict[str, Any],
    ):
        self.session, self.noise, self.kind, self.config, self.state = session, noise, kind, config, state

    def __call__(self, at: LoopState) -> None:
        if at.step % self.session.cfg.checkpoint_every == 0:
            self.save(at)

    def save(self, at: LoopState) -> None:
        session = self.session
        _check_finite(distributed.average(at.window.sums), at.step, session.trainer, at.saved, parameters=True)
        if session.world.main:
            tensors, payload_state = checkpoint_payload(session.trainer, self.noise)
            payload_state.update(self.state, elapsed=at.elapsed)
            ckpt.save(
                session.run_dir,
                at.step,
                self.kind,
                self.config,
                tensors,
                payload_state,
                keep=session.cfg.keep_checkpoints,
            )
        distributed.barrier()  # nobody goes on until the checkpoint is on disk
        at.saved = at.step


class Stop:
    """What ends a session: the step or minute budget, SIGINT/SIGTERM, or ``stop_after`` steps.
    One rank's signal or clock stops every rank, at the same step."""

    def __init__(self, total_steps: int | None, budget: float, stop_after: int | None):
        self.total_steps, self.budget, self.stop_after = total_steps, budget, stop_after
        self.signals = _SignalFlag()

    def more(self, at: LoopState) -> bool:
        return (self.total_steps is None or at.step < self.total_steps) and not at.time_up

    def check(self, at: LoopState) -> None:
        asked = self.signals.raised is not None or (self.stop_after is not None and at.session_steps >= self.stop_after)
        at.interrupted, at.time_up = distributed.any_rank(asked, at.elapsed >= self.budget)

    def time_left(self, at: LoopState) -> float | None:
        return _time_left(at.step, self.total_steps, at.elapsed, self.budget)

    def why(self) -> str:
        return f"signal {self.signals.raised}" if self.signals.raised else "stop requested"


def _lost_peer(error: Exception, world: distributed.World, saved: int) -> GenforgeError | None:
    """The one-line error for a torchrun job whose other process died or hung; None otherwise."""
    reason = distributed.lost_peer(error) if world.distributed else None
    if reason is None:
        return None
    kept = f"the last checkpoint (step {saved}) is intact" if saved >= 0 else "no checkpoint was written"
    return GenforgeError(
        f"{world.describe()}: another process of this job stopped or stopped answering ({reason}); "
        f"{kept}; run the same command to resume"
    )


def _check_finite(
    sums: dict[str, torch.Tensor], step: int, trainer: Trainer, last_saved: int, parameters: bool = False
) -> None:
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
    trainer: Trainer, run_dir: Path, step: int, cfg: TrainConfig, sink: EventSink | NullSink, final: bool = False
) -> None:
    # A fixed generator: every grid of a run shows the same latent points, so progress is visible.
    g = torch.Generator(device=trainer.device).manual_seed(cfg.seed + 12345)
    grid = make_grid(to_uint8(trainer.sample_grid(cfg.grid_images, g)))  # (H, W, C)
    run = RunFolder(run_dir)
    save_png(grid, run.grid(step), scale=GRID_SCALE)
    if final:
        save_png(grid, run.final_grid, scale=GRID_SCALE)
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
