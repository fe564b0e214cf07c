"""The one command to run the first time a CUDA GPU is there: does every family train on it, how
fast, in how much memory, and does a killed run resume bit-identically?

For every registered family (``genforge.families.names()``), through the real command line
(``genforge.cli.main``, in this process, so that ``torch.cuda.max_memory_allocated`` sees it):
  - a short run (``--steps``, default 200) on Fashion-MNIST under each fixed setting: fp32, bf16
    (where the GPU has it), fp16 + GradScaler, bf16 (fp16 without bf16) + channels_last, and the
    same + ``train.compile=true``;
  - one run with ``train.precision=auto`` on emoji (64x64 colour; Fashion-MNIST with --quick; a
    prior on its VQ-VAE's codes): the precision probe measured on the GPU (or read from this
    machine's probe cache);
  - a kill / resume check in fp32: ``python -m genforge train`` killed (SIGKILL) after its first
    checkpoint, run again to the end, its last checkpoint (weights, optimizer moments, RNG states)
    compared tensor by tensor with an uninterrupted run's; when they differ, a second uninterrupted
    run says whether the kernels themselves are non-deterministic;
and one ``torchrun --standalone --nproc-per-node 1`` run (NCCL on CUDA, gloo on CPU) of the first
family. images/s is the last train record's (the second half of each run: start-up, compile and
warm-up left out). The table, with the device, torch/CUDA/NCCL versions, date and git commit, goes
into docs/benchmarks.md between the gpu_check markers (replaced on every run).

On a machine without CUDA it says so in one line and exits 0. ``--device cpu --quick`` runs the
same code paths on CPU (fp32 only, no compile, tiny data) in seconds, for testing the script.

    python benchmarks/gpu_check.py [--steps 200] [--families gan,vqvae] [--doc docs/benchmarks.md]
    python benchmarks/gpu_check.py --device cpu --quick --steps 4 --doc /tmp/check.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import genforge
from common import table
from genforge import checkpoint as ckpt
from genforge import cli, families
from genforge.runfolder import atomic_write, read_records

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- gpu_check: start -->", "<!-- gpu_check: end -->"
# A family that trains over another family's run instead of on data: (that family, the flag that names the run).
TRAINS_ON_RUN = {"prior": ("vqvae", "--vqvae")}
COLUMNS = ["family", "data", "precision", "compile", "images/s", "peak MiB", "resumed bit-identically", "note"]


@dataclass(frozen=True)
class Setting:
    precision: str  # fp32 | bf16 | fp16 | auto
    channels_last: bool | None = False  # None: left to the probe (with auto)
    compile: bool = False

    @property
    def label(self) -> str:
        return self.precision + (" + channels_last" if self.channels_last else "")

    def arguments(self) -> list[str]:
        values = ["--precision", self.precision, "--set", f"train.compile={str(self.compile).lower()}"]
        if self.channels_last is not None:
            values += ["--set", f"train.channels_last={str(self.channels_last).lower()}"]
        return values


def settings(device: str, quick: bool) -> list[Setting]:
    """The fixed settings every family is timed under on this device."""
    if quick:
        return [Setting("fp32")]
    if device == "cuda":
        fast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        fixed = [Setting("fp32")] + [Setting(p) for p in ("bf16", "fp16") if p == "fp16" or fast == "bf16"]
    else:
        fast = "bf16"
        fixed = [Setting("fp32"), Setting("bf16")]
    return [*fixed, Setting(fast, True), Setting(fast, True, compile=True)]


def in_order(names: list[str]) -> list[str]:
    """The families asked for, each after the family whose run it trains over (added if missing)."""
    ordered: list[str] = []
    for name in names:
        needed = TRAINS_ON_RUN.get(name, (None,))[0]
        for family in (needed, name):
            if family is not None and family not in ordered:
                ordered.append(family)
    return ordered


class Check:
    def __init__(self, args: argparse.Namespace, scratch: Path):
        self.args, self.scratch = args, scratch
        self.cuda = args.device == "cuda"
        self.trained: dict[str, Path] = {}  # family -> its fp32 run (what a family over it trains on)
        self.env = {**os.environ, "PYTHONPATH": str(Path(genforge.__file__).parents[1])}  # this genforge

    def command(self, family: str, out: Path, setting: Setting, data: str, checkpoint_every: int = 0) -> list[str]:
        """``genforge train`` arguments: the same for a run in this process, a subprocess or torchrun."""
        args = self.args
        steps = args.steps
        if family in TRAINS_ON_RUN:
            needed, flag = TRAINS_ON_RUN[family]
            source = [flag, str(self.trained[needed])]
        else:
            source = ["--data", data]
            if args.limit:
                source += ["--set", f"data.limit={args.limit}"]
        sets = {
            "train.log_every": max(1, steps // 2),  # the last record times the second half
            "train.checkpoint_every": checkpoint_every or 10 * steps,
            "train.sample_every": 0,
            "train.eval_every": 0,
            "train.grid_images": 4,
            "train.tensorboard": "false",
            "train.probe_seconds": args.probe_seconds,
        }
        if args.batch:
            sets["train.batch_size"] = args.batch
        argv = ["train", family, *source, "--out", str(out), "--steps", str(steps), "--device", args.device]
        argv += ["--quiet", *setting.arguments()]
        return argv + [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]

    def timed(self, family: str, setting: Setting, data: str) -> dict:
        """One run in this process: images/s of its second half, peak device memory."""
        out = self.scratch / f"{family}-{data}-{setting.label.replace(' + ', '-')}-{int(setting.compile)}"
        row = {"family": family, "data": data if family not in TRAINS_ON_RUN else "codes", "precision": setting.label}
        row["compile"] = "yes" if setting.compile else "no"
        if setting.compile:
            torch.compiler.reset()
        if self.cuda:
            gc.collect()  # the previous run's trainer, so that its tensors do not count in this run's peak
            torch.cuda.reset_peak_memory_stats()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its one summary line; errors go to stderr
                code = cli.main(self.command(family, out, setting, data))
        except Exception as error:  # a first day on a GPU: one family's failure must not hide the others'
            return {**row, "note": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"}
        if code != 0:
            return {**row, "note": f"failed: genforge exit {code} (its error line is above)"}
        if self.cuda:
            row["peak MiB"] = round(torch.cuda.max_memory_allocated() / 2**20)
        row["images/s"] = last_speed(out)
        if setting.precision == "auto":
            chosen = ckpt.load(out).state["precision"]
            row["precision"] = "auto: " + chosen["precision"] + (" + channels_last" if chosen["channels_last"] else "")
        if setting == Setting("fp32") and data == self.args.data:
            self.trained.setdefault(family, out)
        return row

    def resumed(self, family: str, data: str) -> str:
        """Kill a subprocess run after its first checkpoint, resume it, compare with an uninterrupted run."""
        every = max(1, self.args.steps // 4)
        runs = {name: self.scratch / f"{family}-resume-{name}" for name in ("whole", "killed", "again")}
        python = [sys.executable, "-m", "genforge"]

        def run(name: str) -> subprocess.CompletedProcess:
            command = python + self.command(family, runs[name], Setting("fp32"), data, every)
            return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=self.args.timeout)

        done = run("whole")
        if done.returncode != 0:
            return f"failed: {last_line(done.stderr)}"
        command = python + self.command(family, runs["killed"], Setting("fp32"), data, every)
        process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        at = wait_for_checkpoint(process, runs["killed"], self.args.timeout)
        if at is None or at >= self.args.steps:
            return "not tested: the run ended before it was killed (raise --steps)"
        again = run("killed")
        if again.returncode != 0:
            return f"failed to resume: {last_line(again.stderr)}"
        if same_checkpoint(runs["whole"], runs["killed"]):
            return f"yes (killed after step {at})"
        control = run("again")
        twice = control.returncode == 0 and same_checkpoint(runs["whole"], runs["again"])
        why = (
            "two uninterrupted runs agree" if twice else "two uninterrupted runs differ too: non-deterministic kernels"
        )
        return f"no (killed after step {at}; {why})"

    def torchrun(self, family: str, setting: Setting, data: str) -> dict:
        """One process under torchrun: the NCCL (gloo on CPU) process group, DDP wrapping, rank-0 I/O."""
        out = self.scratch / f"{family}-torchrun"
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        command = [*launch, "-m", "genforge", *self.command(family, out, setting, data)]
        backend = "NCCL" if self.cuda else "gloo"
        row = {"family": family, "data": data, "precision": setting.label, "compile": "no"}
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=self.args.timeout)
        if done.returncode != 0:
            return {**row, "note": f"torchrun 1 process ({backend}) failed: {last_line(done.stderr)}"}
        return {**row, "images/s": last_speed(out), "note": f"torchrun, 1 process ({backend})"}


def last_speed(run: Path) -> float | None:
    speeds = [r["values"]["images_per_s"] for r in read_records(run) if r["type"] == "train"]
    return speeds[-1] if speeds else None


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def wait_for_checkpoint(process: subprocess.Popen, run: Path, timeout: float) -> int | None:
    """SIGKILL ``process`` as soon as ``run`` has a checkpoint; the step it had reached, or None if
    the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        found = ckpt.find(run) if (run / "checkpoints").is_dir() else None
        if found is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return ckpt.load(found).step
        time.sleep(0.02)
    process.kill()
    process.wait()
    return None


def same_checkpoint(a: Path, b: Path) -> bool:
    """The last checkpoints of two runs hold the same tensors, bit for bit (weights, optimizer, RNG)."""
    first, second = ckpt.load(a), ckpt.load(b)
    if first.step != second.step or first.tensors.keys() != second.tensors.keys():
        return False
    return all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)


def header(device: str) -> str:
    """The machine, the software and the code a table was measured with."""
    if device == "cuda":
        nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else "none"
        nccl = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)  # a tuple in recent torch
        where = f"{torch.cuda.get_device_name()} | CUDA {torch.version.cuda} | NCCL {nccl}"
    else:
        where = "CPU (a dry run of the script, not a GPU figure)"
    return f"{datetime.date.today()} | {where} | torch {torch.__version__} | genforge git {commit()}"


def commit() -> str:
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout
        dirty = " + uncommitted changes" if run("status", "--porcelain", "--untracked-files=no").strip() else ""
        return run("rev-parse", "--short", "HEAD").strip() + dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(doc: Path, section: str) -> None:
    """Put ``section`` between the markers in ``doc`` (replacing what was there), or append it."""
    text = doc.read_text() if doc.exists() else ""
    block = f"{START}\n{section.strip()}\n{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    atomic_write(doc, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=200, help="steps per run")
    parser.add_argument("--quick", action="store_true", help="fp32 only, no compile, 256 images, small batch")
    parser.add_argument("--families", help="comma-separated (default: every registered family)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--auto-data", help="data of the train.precision=auto run (default: emoji; --quick: --data)")
    parser.add_argument("--batch", type=int, help="train.batch_size (default: each family's own; --quick: 8)")
    parser.add_argument("--limit", type=int, help="data.limit: images loaded (default: all; --quick: 256)")
    parser.add_argument("--probe-seconds", type=float, default=1.5, help="train.probe_seconds of the auto run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a subprocess run may take")
    parser.add_argument("--doc", type=Path, help="where the table goes (default on CUDA: docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is present; nothing to check (--device cpu --quick is a dry run on CPU)")
        return 0
    if args.quick:
        args.batch, args.limit = args.batch or 8, args.limit or 256
        args.probe_seconds = min(args.probe_seconds, 0.1)
    auto_data = args.auto_data or (args.data if args.quick else "emoji")
    doc = args.doc or (REPO / "docs" / "benchmarks.md" if args.device == "cuda" else None)
    asked = args.families.split(",") if args.families else families.names()
    for name in asked:
        families.get(name)  # an unknown name: genforge's own error
    names = in_order(asked)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        check = Check(args, Path(scratch))
        for name in names:
            needed = TRAINS_ON_RUN.get(name, (None,))[0]
            if needed is not None and needed not in check.trained:
                rows.append({"family": name, "note": f"not run: its {needed} run failed"})
                continue
            for setting in settings(args.device, args.quick):
                rows.append(check.timed(name, setting, args.data))
                print(format_row(rows[-1]), flush=True)
            rows.append(check.timed(name, Setting("auto", None), auto_data))
            print(format_row(rows[-1]), flush=True)
            fp32 = next(row for row in rows if row["family"] == name and row["precision"] == "fp32")
            fp32["resumed bit-identically"] = check.resumed(name, args.data)
            print(f"{name} | resumed bit-identically {fp32['resumed bit-identically']}", flush=True)
        fixed = settings(args.device, args.quick)
        rows.append(check.torchrun(names[0], fixed[min(1, len(fixed) - 1)], args.data))  # bf16 (fp16), or fp32
        print(format_row(rows[-1]), flush=True)
    minutes = (time.perf_counter() - started) / 60
    section = "\n\n".join(
        [
            "## First GPU check — `benchmarks/gpu_check.py`",
            header(args.device),
            f"{args.steps} steps per run, batch {args.batch or 'each family default'}; images/s of the second half of "
            "each run; peak MiB from torch.cuda.max_memory_allocated (the auto row's includes the probe's trainers); "
            f"resume checked in fp32 (SIGKILL after the first checkpoint). The whole check took {minutes:.1f} min.",
            table(rows, COLUMNS),
        ]
    )
    print("\n" + section)
    if doc is not None:
        write_section(doc, section)
        print(f"\nwritten to {doc}")
    return 0


def format_row(row: dict) -> str:
    return " | ".join(f"{key} {row[key]}" for key in COLUMNS if row.get(key) not in (None, ""))


if __name__ == "__main__":
    raise SystemExit(main())
