"""Device and precision, chosen once at start-up: by the user, or by measuring on this machine.

``train.precision: auto`` (and ``train.channels_last: null``) do not guess from CPU flags: they
time a few steps of the family's own training step under each candidate (fp32 and bf16
autocast, channels_last on and off) on the actual device, pick the fastest, and cache the choice
with the probe's numbers per machine, so the next run on the same machine starts at once. bf16
autocast often pays on CPUs without AMX too (avx512_bf16) and sometimes not at all; only a
measurement can tell.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge.config import to_dict
from genforge.errors import GenforgeError
from genforge.paths import cache_root
from genforge.runfolder import atomic_write
from genforge.training import distributed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_VERSION = 1


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenforgeError("--device cuda was asked for but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenforgeError("--device mps was asked for but this PyTorch has no MPS support (use --device cpu or auto)")
    return torch.device(name)


def fixed_precision(name: str, device: torch.device) -> torch.dtype:
    """A precision the user named -> its dtype, refusing what the device cannot run."""
    if name == "fp16" and device.type != "cuda":
        raise GenforgeError("train.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GenforgeError("train.precision bf16: this GPU has no bf16 support (use fp16 or fp32)")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision context; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------


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
    """(precision, channels_last) pairs to try: the product of whatever the config leaves open."""
    if train_cfg.precision == "auto":
        precisions = ["fp32"]
        bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
        if bf16_ok:
            precisions.append("bf16")
    else:
        fixed_precision(train_cfg.precision, device)
        precisions = [train_cfg.precision]
    layouts = [False, True] if train_cfg.channels_last is None else [bool(train_cfg.channels_last)]
    return [(p, c) for p in precisions for c in layouts]


def machine_key(device: torch.device) -> str:
    """What the cached choice belongs to: the processor (or GPU), core count and torch build."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return f"{device.type}|{name}|{os.cpu_count()} cores|{torch.get_num_threads()} threads|torch {torch.__version__}"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def choose(spec, prepared, device: torch.device, batch, *, progress: bool = True) -> Choice:
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
    if progress and main:
        print("measuring the fastest precision on this machine (cached for the next run)...", file=sys.stderr)
    table, fastest = [], None
    slowdown = {p: distributed.from_main(kernel_slowdown(device, DTYPES[p])) for p in {p for p, _ in options}}
    for precision, channels_last in options:
        setting = precision + (" + channels_last" if channels_last else "")
        row = {"setting": setting, "precision": precision, "channels_last": channels_last}
        if slowdown[precision] > HOPELESS:  # emulated arithmetic: not worth timing the step at all
            table.append({**row, "images_per_s": None, "ruled_out": f"matmul {slowdown[precision]:.0f}x slower"})
            continue
        seconds_per_step = _time_steps(
            spec, prepared, device, batch, precision, channels_last, train.probe_seconds, fastest
        )
        fastest = seconds_per_step if fastest is None else min(fastest, seconds_per_step)
        table.append({**row, "images_per_s": round(train.batch_size / seconds_per_step, 1)})
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
    for kind in (torch.float32, dtype):
        a = torch.randn(256, 512, device=device).to(kind)
        b = torch.randn(512, 512, device=device).to(kind)
        a @ b  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        seconds[kind] = time.perf_counter() - start
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


# A candidate whose step on a 1/SCREEN slice of the batch, scaled up, takes HOPELESS times the
# fastest whole step so far is not timed further: bf16 without hardware support is emulated,
# 30-100x slower, and timing it for seconds would tell nothing more. (A slice's step costs a
# little more than its share, so the screen only ever errs towards timing a candidate in full.)
HOPELESS = 10.0
SCREEN = 16


def _time_steps(
    spec, prepared, device, batch, precision: str, channels_last: bool, seconds: float, fastest: float | None
) -> float:
    """Seconds per training step of a throwaway trainer under one setting (after warm-up)."""
    config = copy.deepcopy(prepared.config)
    config.train.precision, config.train.channels_last = precision, channels_last
    trial = copy.copy(prepared)
    trial.config = config
    rng = torch.get_rng_state()
    try:
        trainer = spec.build(trial, device, DTYPES[precision])
        per_step = getattr(trainer, "batches_per_step", 1)
        x, y = batch(per_step)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x.contiguous()
        if fastest is not None:  # screen on a sixteenth of the batch before timing the whole of it
            rows = per_step * max(2, len(x) // per_step // SCREEN)
            start = time.perf_counter()
            trainer.train_step(x[:rows], None if y is None else y[:rows])
            _sync(device)
            estimate = (time.perf_counter() - start) * len(x) / rows
            if distributed.from_main(estimate > HOPELESS * fastest):  # rank 0's verdict, so all stop together
                return estimate  # enough to rule it out
        for _ in range(2):  # warm-up: allocator, oneDNN primitive caches, autotuning
            trainer.train_step(x, y)
        _sync(device)
        steps, start = 0, time.perf_counter()
        # rank 0's clock decides when to stop, so that every rank takes the same (collective) steps
        while distributed.from_main(steps < 3 or time.perf_counter() - start < seconds):
            trainer.train_step(x, y)
            steps += 1
        _sync(device)
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_rng_state(rng)  # the probe must not change what the real run draws


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
