"""Training throughput per family and setting on this machine, and old code vs new in one run.

Every arm is built the way ``genforge train`` builds it, through the family registry
(``families.get(name)``, ``spec.prepare``, ``spec.build``), on Fashion-MNIST at 32 px (random
images of that shape where it is not installed). For each setting it reports images/s of the
bare step (``train_step`` on one fixed batch, after warm-up) and of the full training loop
(batches, logging, checkpoint and grid at the end), and the loop's overhead (loop time per step
over bare time per step). The prior arms train on random codes of the VQ-VAE's grid (a step's
cost does not depend on the codes' values) over a one-step VQ-VAE.

``--compare REF`` times the source tree of git revision REF (``git archive REF src``) against
the working tree's, each in its own process, in alternating order (``--rounds`` times), so both
see the same machine at the same time: "before" and "after" from one run of one script. An arm or
setting the old tree does not know (a preset added since) shows as n/a.

    python benchmarks/train_throughput.py [--family gan,vqvae,prior-ar,prior-maskgit] [--settings fp32,bf16]
        [--steps 100] [--batch-size 128] [--compare REF] [--rounds 2]

Arms: gan, vqvae, vqvae-perceptual (L1 + perceptual term on the classifier), vqvae-perceptual-inception
(on Inception's first blocks), vqgan (+ discriminator from step 0), prior-ar, prior-maskgit,
prior-ar-no-dropout (model.dropout=0). Settings: fp32, bf16, each optionally +cl (channels_last; conv arms only)
and +compile (torch.compile), e.g. ``bf16+cl+compile``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ARMS = {  # name -> (family, preset, config values)
    "gan": ("gan", "default", {}),
    "vqvae": ("vqvae", "default", {}),
    "vqvae-perceptual": ("vqvae", "perceptual", {}),
    "vqvae-perceptual-inception": ("vqvae", "perceptual", {"optim": {"perceptual_net": "inception"}}),
    "vqgan": ("vqvae", "vqgan", {"optim": {"disc_start": 0}}),
    "prior-ar": ("prior", "default", {"network": "ar"}),
    "prior-maskgit": ("prior", "default", {"network": "maskgit"}),
    "prior-ar-no-dropout": ("prior", "default", {"network": "ar", "model": {"dropout": 0.0}}),
}
CONV_SETTINGS = ("fp32", "fp32+cl", "bf16", "bf16+cl")
PRIOR_SETTINGS = ("fp32", "bf16")
DATA_LIMIT = 20_000
REPO = Path(__file__).resolve().parent.parent


def parse_setting(setting: str) -> tuple[str, bool, bool]:
    """'bf16+cl+compile' -> (precision, channels_last, compile)."""
    precision, *flags = setting.split("+")
    if precision not in ("fp32", "bf16") or not set(flags) <= {"cl", "compile"}:
        raise SystemExit(f"unknown setting {setting!r} (fp32 or bf16, then +cl and/or +compile)")
    return precision, "cl" in flags, "compile" in flags


# ---------------------------------------------------------------------------------------------
# Worker: one source tree, in this process
# ---------------------------------------------------------------------------------------------


def data_source(folder: Path) -> str:
    from genforge.data import load_dataset

    try:
        load_dataset("fashion-mnist", split="train", limit=1)
        return "fashion-mnist"
    except Exception:  # not installed: random images of the same shape
        path = folder / "random.npz"
        rng = np.random.RandomState(0)
        images = rng.randint(0, 256, (DATA_LIMIT, 32, 32, 1), dtype=np.uint8)
        np.savez(path, images=images, labels=rng.randint(0, 10, DATA_LIMIT))
        return str(path)


def one_step_vqvae(folder: Path, source: str) -> Path:
    """A VQ-VAE run of one step: what a prior needs to be built (its grid and codebook)."""
    from genforge import families
    from genforge.training.runs import train

    spec = families.get("vqvae")
    values = {"data": {"source": source, "limit": 2000}, "train": {"steps": 1, "precision": "fp32", "device": "cpu"}}
    values["train"]["channels_last"] = False
    train(spec, spec.resolve("default", None, (), values), folder / "vq")
    return folder / "vq"


def build(arm: str, setting: str, batch_size: int, folder: Path, source: str, vq: Path | None):
    """The arm's spec, prepared data and trainer, as ``genforge train`` makes them."""
    from genforge import families
    from genforge.progress import SILENT
    from genforge.training.precision import DTYPES

    family, preset, values = ARMS[arm]
    precision, channels_last, compile_ = parse_setting(setting)
    spec = families.get(family)
    train = {
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile_,
        "device": "cpu",
        "log_every": 50,
        "sample_every": 0,
        "checkpoint_every": 100_000,
        "grid_images": 16,
    }
    values = {**values, "train": train}
    if family == "prior":
        values["vqvae"] = str(vq)
    else:
        values["data"] = {"source": source, "limit": DATA_LIMIT}
    config = spec.resolve(preset, None, (), values)
    prepared = spec.prepare(config, SILENT)
    if family == "prior":  # random codes of the VQ-VAE's grid: the step's cost does not depend on them
        m = prepared.config.model
        rng = np.random.RandomState(0)
        prepared.images = rng.randint(0, m.vocab_size, (len(prepared.labels), m.grid_h, m.grid_w)).astype(np.int16)
    else:  # what training makes first, e.g. the perceptual network (a no-op for most families)
        spec.training_data(prepared, folder, torch.device("cpu"), SILENT)
    trainer = spec.build(prepared, torch.device("cpu"), DTYPES[precision])
    return spec, prepared, trainer


def batches_for(prepared, trainer, channels_last: bool):
    from genforge.training.batches import Batches, on_device

    device = torch.device("cpu")
    labels = on_device(prepared.labels, device) if prepared.labels is not None else None
    cfg = prepared.config.train
    batches = Batches(on_device(prepared.images, device), labels, cfg.batch_size, cfg.seed, device)
    batches.channels_last = channels_last
    batches.per_step = trainer.batches_per_step
    return batches


def bare_step_seconds(trainer, batches, steps: int, warmup: int) -> float:
    x, y = batches.get(0)
    for _ in range(warmup):  # allocator, oneDNN caches, compilation
        trainer.train_step(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)
    return (time.perf_counter() - t0) / steps


def loop_step_seconds(spec, prepared, trainer, batches, steps: int, folder: Path) -> float:
    from genforge.config import to_dict
    from genforge.training.loop import run

    cfg = prepared.config.train
    cfg.steps = steps
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run(trainer, batches, cfg, folder, kind=spec.name, config=to_dict(prepared.config))
    return (time.perf_counter() - t0) / steps


def measure(arm: str, setting: str, args, folder: Path, source: str, vq: Path | None) -> dict:
    from genforge.errors import GenforgeError

    row = {"arm": arm, "setting": setting}
    try:
        spec, prepared, trainer = build(arm, setting, args.batch_size, folder, source, vq)
    except GenforgeError as e:  # e.g. a preset the old tree does not have
        return {**row, "error": str(e)}
    batch = prepared.config.train.batch_size
    channels_last = parse_setting(setting)[1]
    bare = bare_step_seconds(trainer, batches_for(prepared, trainer, channels_last), args.steps, args.warmup)
    # a fresh trainer for the loop, so both start from the same state
    spec, prepared, trainer = build(arm, setting, args.batch_size, folder, source, vq)
    loop = loop_step_seconds(
        spec, prepared, trainer, batches_for(prepared, trainer, channels_last), args.steps, folder / f"{arm}-{setting}"
    )
    return {**row, "bare_images_per_s": batch / bare, "loop_images_per_s": batch / loop, "overhead": loop / bare}


def work(args) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        source = data_source(folder)
        vq = one_step_vqvae(folder, source) if any(a.startswith("prior") for a in args.arms) else None
        for arm in args.arms:
            for setting in settings_for(arm, args.settings):
                rows.append(measure(arm, setting, args, folder, source, vq))
                if args.worker:
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def settings_for(arm: str, chosen: list[str] | None) -> list[str]:
    conv = ARMS[arm][0] != "prior"
    settings = chosen or list(CONV_SETTINGS if conv else PRIOR_SETTINGS)
    return [s for s in settings if conv or not parse_setting(s)[1]]  # channels_last: convolutions only


# ---------------------------------------------------------------------------------------------
# Parent: this tree alone, or REF vs this tree in alternating worker processes
# ---------------------------------------------------------------------------------------------


def source_tree(ref: str, into: Path) -> Path:
    """``src/`` of git revision ``ref``, unpacked into ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_worker(src: Path, argv: list[str]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, __file__, *argv, "--worker"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker on {src} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def compare(args, argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        old_src, new_src = source_tree(args.compare, Path(d)), REPO / "src"
        results: dict[str, dict[tuple, list[dict]]] = {"before": {}, "after": {}}
        for arm in args.arms:
            for r in range(args.rounds):
                order = [("before", old_src), ("after", new_src)]
                for which, src in order if r % 2 == 0 else order[::-1]:
                    for row in run_worker(src, [*argv, "--family", arm]):
                        results[which].setdefault((row["arm"], row["setting"]), []).append(row)
                        print(f"  {which:>6} {row['arm']} {row['setting']}: {_short(row)}", file=sys.stderr, flush=True)
    print(f"\nbefore = {args.compare}, after = the working tree; median of {args.rounds} alternating rounds")
    print("| arm | setting | bare images/s before | after | ratio | loop images/s before | after | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key, after_rows in results["after"].items():
        before_rows = results["before"].get(key, [])
        cells = []
        for field in ("bare_images_per_s", "loop_images_per_s"):
            b, a = _median(before_rows, field), _median(after_rows, field)
            ratio = f"{a / b:.2f}x" if a and b else "n/a"
            cells += [f"{b:.0f}" if b else "n/a", f"{a:.0f}" if a else "n/a", ratio]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")


def _median(rows: list[dict], field: str) -> float | None:
    values = [r[field] for r in rows if field in r]
    return float(np.median(values)) if values else None


def _short(row: dict) -> str:
    if "error" in row:
        return f"n/a ({row['error'][:80]})"
    return f"bare {row['bare_images_per_s']:.0f} img/s, loop {row['loop_images_per_s']:.0f} img/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gan,vqvae,prior-ar,prior-maskgit", help=f"arms: {', '.join(ARMS)}")
    parser.add_argument("--settings", help="comma-separated, e.g. fp32,bf16+cl (default: per arm)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before the bare timing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compare", metavar="REF", help="also time git revision REF's src/, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare: alternating rounds per arm")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    args.arms = args.family.split(",")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm {unknown[0]!r} (known: {', '.join(ARMS)})")
    args.settings = args.settings.split(",") if args.settings else None
    for setting in args.settings or []:
        parse_setting(setting)
    if args.worker:
        work(args)
        return
    print(
        f"# {datetime.date.today()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
        f"torch {torch.__version__} | threads {torch.get_num_threads()} | batch {args.batch_size} | {args.steps} steps"
    )
    if args.compare:
        worker_argv = [a for a in argv if not a.startswith("--compare") and a != args.compare]
        worker_argv = _without(worker_argv, "--family")
        compare(args, worker_argv)
        return
    print("| arm | setting | loop images/s | bare-step images/s | loop overhead | vs first setting |")
    print("|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for row in work(args):
        if "error" in row:
            print(f"| {row['arm']} | {row['setting']} | n/a | n/a | n/a | {row['error'][:60]} |")
            continue
        ips = row["loop_images_per_s"]
        base.setdefault(row["arm"], ips)
        print(
            f"| {row['arm']} | {row['setting']} | {ips:.0f} | {row['bare_images_per_s']:.0f} | "
            f"{row['overhead']:.3f} | {ips / base[row['arm']]:.2f}x |",
            flush=True,
        )


def _without(argv: list[str], flag: str) -> list[str]:
    """argv without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
