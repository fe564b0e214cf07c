"""The training loop shared by every family (GAN, VQ-VAE, prior).

A family is a plain object built over already-made modules and optimizers (see ``Family``); this
loop owns everything around its step: batching from the in-memory dataset, the step/time budget,
progress, ``metrics.jsonl``, sample grids, checkpoints (periodic, on SIGINT/SIGTERM, at the end)
and resuming from the newest checkpoint so that an interrupted run ends bit-identical on CPU.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from genforge import checkpoint as ckpt
from genforge.config import TrainConfig
from genforge.images import save_grid, to_uint8


class Family(Protocol):
    kind: str
    device: torch.device

    def modules(self) -> dict[str, torch.nn.Module]: ...  # everything checkpointed, by name

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]: ...

    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor: ...  # (n, C, H, W) in [-1, 1]

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None: ...


@dataclass
class Batches:
    """Epoch-wise shuffled batches drawn from one in-memory uint8 tensor.

    The order is a pure function of (seed, step): batch ``step`` is slice ``step % per_epoch`` of
    the permutation seeded by (seed, epoch). Resuming at any step needs no sampler state.
    """

    images: torch.Tensor  # uint8 (N, H, W, C) images, or integer (N, h, w) code grids, on the device
    labels: torch.Tensor | None  # int64 (N,)
    batch_size: int
    seed: int
    channels_last: bool = False
    _epoch: int = field(default=-1, repr=False)
    _perm: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        self.per_epoch = max(1, len(self.images) // self.batch_size)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        epoch, slot = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.images), generator=g).to(self.images.device)
            self._epoch = epoch
        index = self._perm[slot * self.batch_size : (slot + 1) * self.batch_size]
        y = self.labels[index] if self.labels is not None else None
        if self.images.dtype != torch.uint8:  # code grids for priors: (B, h, w) integers, as they are
            return self.images[index].long(), y
        x = self.images[index].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, C, H, W) in [-1, 1]
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x, y


@dataclass
class RunResult:
    step: int
    interrupted: bool
    seconds: float
    images_per_second: float
    last: dict[str, float]


def checkpoint_payload(
    family: Family, noise: dict[str, torch.Generator]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"optimizers": {}}
    for name, module in family.modules().items():
        tensors.update(ckpt.pack_module(f"model.{name}", module))
    for name, opt in family.optimizers().items():
        t, s = ckpt.pack_optimizer(f"optim.{name}", opt)
        tensors.update(t)
        state["optimizers"][name] = s
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in noise.items():
        tensors[f"rng.{name}"] = gen.get_state()
    t, s = family.extra_state()
    tensors.update({f"extra.{k}": v for k, v in t.items()})
    state["extra"] = s
    return tensors, state


def restore_payload(family: Family, noise: dict[str, torch.Generator], c: ckpt.Checkpoint) -> None:
    for name, module in family.modules().items():
        ckpt.unpack_module(f"model.{name}", module, c.tensors)
    for name, opt in family.optimizers().items():
        ckpt.unpack_optimizer(f"optim.{name}", opt, c.tensors, c.state["optimizers"][name])
    torch.set_rng_state(c.tensors["rng.torch"])
    for name, gen in noise.items():
        gen.set_state(c.tensors[f"rng.{name}"])
    family.load_extra_state(
        {k[6:]: v for k, v in c.tensors.items() if k.startswith("extra.")}, c.state.get("extra", {})
    )


def run(
    family: Family,
    images: np.ndarray,
    labels: np.ndarray | None,
    cfg: TrainConfig,
    run_dir: Path,
    config: dict[str, Any],
    *,
    noise: dict[str, torch.Generator] | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Train ``family`` until ``cfg.steps`` / ``cfg.minutes`` is reached or a signal arrives.

    ``noise`` holds the family's random generators (their state is checkpointed). ``evaluate`` is
    called every ``cfg.eval_every`` steps. ``stop_after`` ends this session early after that many
    steps, as an interruption would (tests use it).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    noise = noise or {}
    device = family.device
    data = Batches(
        torch.from_numpy(images).to(device),
        torch.from_numpy(labels).long().to(device) if labels is not None else None,
        cfg.batch_size,
        cfg.seed,
        cfg.channels_last,
    )
    step, elapsed = 0, 0.0
    found = ckpt.find(run_dir) if (run_dir / "checkpoints").is_dir() else None
    if found is not None:
        c = ckpt.load(found, kind=family.kind, map_location="cpu")
        restore_payload(family, noise, c)
        step, elapsed = c.step, float(c.state.get("elapsed", 0.0))
        _truncate_metrics(run_dir / "metrics.jsonl", step)
        _say(progress, f"resuming {run_dir} from step {step} ({elapsed / 60:.1f} min trained)")

    budget = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    total_steps = cfg.steps if cfg.steps > 0 else None
    if total_steps is None and budget == math.inf:
        budget = 60.0  # neither limit given: a short run, never an endless one
    stop = _SignalFlag()
    metrics_file = open(run_dir / "metrics.jsonl", "a")
    bar = tqdm(total=total_steps, initial=step, disable=not progress, dynamic_ncols=True, unit="step", file=sys.stderr)
    sums: dict[str, torch.Tensor] = {}
    count, window_start, window_images = 0, time.perf_counter(), 0
    session_start, session_steps = time.perf_counter(), 0
    last: dict[str, float] = {}
    images_per_second = 0.0

    saved = [step if found is not None else -1]

    def save() -> None:
        tensors, state = checkpoint_payload(family, noise)
        state["elapsed"] = elapsed
        ckpt.save(run_dir, step, family.kind, config, tensors, state, keep=cfg.keep_checkpoints)
        saved[0] = step

    def write(record: dict[str, Any]) -> None:
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    interrupted = False
    try:
        with stop:
            base_elapsed = elapsed
            while (total_steps is None or step < total_steps) and elapsed < budget:
                x, y = data.get(step)
                losses = family.train_step(x, y)
                step += 1
                session_steps += 1
                for k, v in losses.items():
                    sums[k] = sums[k] + v if k in sums else v.detach().clone()
                count += 1
                window_images += x.shape[0]
                elapsed = base_elapsed + time.perf_counter() - session_start

                if step % cfg.log_every == 0 or (total_steps is not None and step == total_steps):
                    now = time.perf_counter()
                    images_per_second = window_images / max(now - window_start, 1e-9)
                    last = {k: float(v) / count for k, v in sums.items()}
                    if hasattr(family, "log_extras"):
                        last.update(family.log_extras())
                    write(
                        {"step": step, "time": round(elapsed, 3), "images_per_s": round(images_per_second, 1), **last}
                    )
                    bar.set_postfix_str(_postfix(last, images_per_second, step, total_steps, elapsed, budget))
                    sums, count, window_start, window_images = {}, 0, now, 0
                if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    scores = evaluate(step)
                    write({"step": step, "time": round(elapsed, 3), "eval": scores})
                    shown = " | ".join(
                        f"{k} {scores[k]:.3g}" for k in ("fd", "recall", "classes_covered") if k in scores
                    )
                    bar.set_description_str(shown)
                if cfg.sample_every and step % cfg.sample_every == 0:
                    _save_samples(family, run_dir, step, cfg)
                if step % cfg.checkpoint_every == 0:
                    save()
                bar.update(1)
                if stop.raised or (stop_after is not None and session_steps >= stop_after):
                    interrupted = True
                    break
        if step != saved[0]:
            save()
        _save_samples(family, run_dir, step, cfg, final=True)
    finally:
        bar.close()
        metrics_file.close()
    if interrupted:
        why = f"signal {stop.raised}" if stop.raised else "stop requested"
        _say(progress, f"interrupted ({why}) at step {step}; checkpoint saved; run the same command to resume")
    seconds = time.perf_counter() - session_start
    return RunResult(step, interrupted, seconds, images_per_second, last)


def _save_samples(family: Family, run_dir: Path, step: int, cfg: TrainConfig, final: bool = False) -> None:
    # A fixed generator: every grid of a run shows the same latent points, so progress is visible.
    g = torch.Generator(device=family.device).manual_seed(cfg.seed + 12345)
    pictures = to_uint8(family.sample_grid(cfg.grid_images, g))
    save_grid(pictures, run_dir / "samples" / f"step-{step:07d}.png")
    if final:
        save_grid(pictures, run_dir / "samples" / "final.png")


def _postfix(last: dict[str, float], ips: float, step: int, total: int | None, elapsed: float, budget: float) -> str:
    parts = [f"{k} {v:.3f}" for k, v in list(last.items())[:4]]
    parts.append(f"{ips:.0f} img/s")
    left = []
    if total is not None and step:
        left.append((total - step) * elapsed / step)
    if budget != math.inf:
        left.append(budget - elapsed)
    if left:
        parts.append(f"ETA {_clock(max(0.0, min(left)))}")
    return " | ".join(parts)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: they will be logged again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


class _SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (then it checkpoints)."""

    def __init__(self):
        self.raised: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        import threading

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
