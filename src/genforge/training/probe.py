"""Precision and memory layout, chosen once at start-up: by the user, or by measuring on this machine.

``train.precision: auto`` (and ``train.channels_last: null``) do not guess from CPU flags: they
time the family's own training step under each candidate (fp32; bf16 autocast where the device
has it; fp16 autocast with a GradScaler on CUDA; channels_last on and off) on the actual device,
pick the fastest, and cache the measurements per machine, so the next run on the same machine
starts at once. Every candidate is timed the same way: a fresh trainer, ``WARMUP_STEPS`` untimed
steps (compile, kernel set-up, one-off first-step work), then the same number of timed steps on
the same batch. bf16 autocast often pays on CPUs without AMX too (avx512_bf16) and sometimes not
at all; only a measurement can tell. (fp16's scaler starts at a scale of 2**16 and skips the
optimizer step wherever that overflows: such steps, cheaper than the rest, may fall among the
first timed ones when the warm-up has not used them up.)
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge.config import to_dict
from genforge.paths import cache_root
from genforge.progress import SILENT, Reporter
from genforge.runfolder import atomic_write
from genforge.training import distributed
from genforge.training.devices import _sync, machine_key
from genforge.training.precision import DTYPES, fixed_precision

PROBE_VERSION = 2  # 2: every row is a warmed-up measurement of the same steps (1 held extrapolated screens)


@dataclass
class Choice:
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    how: str  # "set" (by the user), "probe" (measured now), "cache" (measured before), "resumed"
    table: list[dict[str, Any]] = field(default_factory=list)  # one row per candidate: images/s
    cache: Path | None = None

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def describe(self) -> str:
        layout = " + channels_last" if self.channels_last else ""
        text = f"precision {self.precision}{layout} ({self.how}"
        if self.table:
            text += ": " + ", ".join(
                f"{row['setting']} {row['images_per_s']:.0f} img/s"
                if row["images_per_s"] is not None
                else f"{row['setting']} ruled out ({row['ruled_out']})"
                for row in self.table
            )
        return text + ")"


def candidates(train_cfg, device: torch.device) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs to try: the product of whatever the config leaves open.

    ``auto`` tries fp32 everywhere; bf16 autocast on CPUs and on GPUs that support it; fp16
    autocast with a GradScaler on every CUDA GPU (T4/V100-class GPUs have fp16 tensor cores but
    no bf16). MPS is timed in fp32 only.
    """
    if train_cfg.precision == "auto":
        precisions = ["fp32"]
        if device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
            precisions.append("bf16")
        if device.type == "cuda":
            precisions.append("fp16")
    else:
        fixed_precision(train_cfg.precision, device)
        precisions = [train_cfg.precision]
    layouts = [False, True] if train_cfg.channels_last is None else [bool(train_cfg.channels_last)]
    return [(p, c) for p in precisions for c in layouts]


def choose(spec, prepared, device: torch.device, batch, *, reporter: Reporter = SILENT) -> Choice:
    """The precision and memory layout to train with (see the module's docstring).

    ``batch(per_step)`` gives one real training step's examples and labels to time the step on
    (``per_step`` batches of them, for trainers that take several per step).
    """
    train = prepared.config.train
    options = candidates(train, device)
    if len(options) == 1:
        precision, channels_last = options[0]
        return Choice(precision, channels_last, "set")
    # Under torchrun every rank must train with the same choice: rank 0's cache decides, and a
    # probe runs on every rank in step (its steps are collective), timed and written by rank 0.
    main = distributed.current().main
    key = _probe_key(spec.name, prepared.config, device, options)
    path = cache_root() / "precision" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    cached = distributed.from_main(_read(path, key) if main else None)
    if cached is not None:
        best = _best(cached)
        return Choice(best["precision"], best["channels_last"], "cache", cached, path)
    if main:
        reporter.say("measuring the fastest precision on this machine (cached for the next run)...")
    table: list[dict[str, Any]] = []
    steps, fastest = None, None  # timed steps per candidate (the first one measured decides); the best so far
    slowdown = {p: distributed.from_main(kernel_slowdown(device, DTYPES[p])) for p in {p for p, _ in options}}
    for precision, channels_last in options:
        setting = precision + (" + channels_last" if channels_last else "")
        row = {"setting": setting, "precision": precision, "channels_last": channels_last}
        if slowdown[precision] > HOPELESS:  # emulated arithmetic: not worth timing the step at all
            table.append({**row, "images_per_s": None, "ruled_out": f"matmul {slowdown[precision]:.0f}x slower"})
            continue
        limit = None if fastest is None else fastest["seconds"]
        timing = _time_steps(spec, prepared, device, batch, precision, channels_last, train.probe_seconds, steps, limit)
        steps = timing.planned
        if timing.steps < timing.planned:  # already slower than the best over fewer steps: it cannot win
            ruled_out = f"slower than {fastest['setting']} after {timing.steps} of {timing.planned} steps"
            table.append({**row, "images_per_s": None, "ruled_out": ruled_out})
            continue
        measured = {**row, "images_per_s": round(train.batch_size * timing.steps / timing.seconds, 1), "steps": steps}
        table.append(measured)
        if fastest is None or timing.seconds < fastest["seconds"]:
            fastest = {"setting": setting, "seconds": timing.seconds}
    table = distributed.from_main(table)
    best = _best(table)
    entry = {"version": PROBE_VERSION, "key": key, "table": table, "date": time.strftime("%Y-%m-%d %H:%M")}
    if main:
        try:
            atomic_write(path, json.dumps(entry, indent=1))
        except OSError:
            path = None  # an unwritable cache only costs the next run another probe
    return Choice(best["precision"], best["channels_last"], "probe", table, path)


def _best(table: list[dict[str, Any]]) -> dict[str, Any]:
    return max((row for row in table if row["images_per_s"] is not None), key=lambda row: row["images_per_s"])


def kernel_slowdown(device: torch.device, dtype: torch.dtype) -> float:
    """How many times slower a (256 x 512) @ (512 x 512) matmul runs in ``dtype`` than in fp32 here.

    A screen before the family's own step is timed: without hardware support bf16 is emulated,
    and a candidate 30-100x slower would cost minutes to time and could never be chosen.
    """
    if dtype == torch.float32:
        return 1.0
    seconds = {}
    for candidate in (torch.float32, dtype):
        a = torch.randn(256, 512, device=device).to(candidate)
        b = torch.randn(512, 512, device=device).to(candidate)
        a @ b  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        seconds[candidate] = time.perf_counter() - start
    return seconds[dtype] / max(seconds[torch.float32], 1e-9)


def _probe_key(family: str, config: Any, device: torch.device, options) -> str:
    """Model, batch size and candidates decide the timings; data, seeds and budgets do not."""
    values = to_dict(config)
    values.pop("data", None)
    train = values.get("train", {})
    shape = {"batch_size": train.get("batch_size"), "compile": train.get("compile")}
    values["train"] = shape
    key = {"machine": machine_key(device), "family": family, "config": values, "options": options}
    processes = distributed.current().size
    if processes > 1:  # each process steps its share of the batch, and waits for the others
        key["processes"] = processes
    return json.dumps(key)


def _read(path: Path, key: str) -> list[dict[str, Any]] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != PROBE_VERSION or entry.get("key") != key:
        return None
    return entry.get("table")


# The screen before a candidate's step is timed: bf16 without hardware support is emulated, 30-100x
# slower than fp32 (CPUs without AVX-512), and a matmul shows it in milliseconds.
HOPELESS = 10.0
# Untimed steps before each candidate's timed ones: they carry torch.compile, oneDNN/cuDNN set-up and
# autotuning, the allocator's growth and one-off work in the step itself (VQ k-means init, step 0's R1).
WARMUP_STEPS = 2
MIN_STEPS = 3


@dataclass
class Timing:
    seconds: float  # wall time of the timed steps (device synchronised at both ends)
    steps: int  # timed steps taken
    planned: int  # timed steps every candidate takes; fewer when stopped because it could no longer win


def _time_steps(
    spec,
    prepared,
    device,
    batch,
    precision: str,
    channels_last: bool,
    seconds: float,
    steps: int | None,
    limit: float | None,
) -> Timing:
    """Time a throwaway trainer's steps under one setting: ``WARMUP_STEPS`` untimed, then ``steps``
    timed ones (or, for the first candidate, ``steps=None``: as many as fit in ``seconds``, at least
    ``MIN_STEPS``), all on the same batch.

    Every candidate is built afresh, so its timed steps are the same steps of the training schedule
    (R1 and the VQ-GAN discriminator's start fall on the same ones for all). With ``limit`` (the
    best candidate's seconds for the same steps), timing stops as soon as this one has taken longer
    than that: its remaining steps could only add to its time, so it cannot win.
    """
    config = copy.deepcopy(prepared.config)
    config.train.precision, config.train.channels_last = precision, channels_last
    trial = copy.copy(prepared)
    trial.config = config
    rng = torch.get_rng_state()
    try:
        if config.train.compile:  # each candidate compiles its own graphs, as the real run will
            torch.compiler.reset()
        trainer = spec.build(trial, device, DTYPES[precision])
        per_step = trainer.batches_per_step
        x, y = batch(per_step)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x.contiguous()
        for _ in range(WARMUP_STEPS):
            trainer.train_step(x, y)
        _sync(device)
        taken, start = 0, time.perf_counter()
        while True:
            # Rank 0's clock decides, so that every rank takes the same (collective) steps. No sync
            # per step: the host's clock after k launched steps is a lower bound on their time.
            elapsed = time.perf_counter() - start
            if steps is None:
                more = taken < MIN_STEPS or elapsed < seconds
            else:
                more = taken < steps and (limit is None or elapsed <= limit)
            if not distributed.from_main(more):
                break
            trainer.train_step(x, y)
            taken += 1
        _sync(device)
        return Timing(time.perf_counter() - start, taken, taken if steps is None else steps)
    finally:
        torch.set_rng_state(rng)  # the probe must not change what the real run draws
