"""Starting from an image folder: the first start decodes it into the folder cache, the second
reuses it; and training from the folder is as fast as from the same images in memory.

Makes a folder of ``--n`` synthetic ``--size`` x ``--size`` JPEGs (in a temporary folder, or
``--dir``), with its own empty genforge cache, then measures, each start in a fresh process:

(a) the time to the first training step of ``genforge train gan`` on the first start (the cache
    is built) and on the second (the cache is reused), counted from the process's start (Python
    and torch imports included) and from the call to ``runs.train`` (the first step itself
    included), beside a start from the same images in an .npz; the goal for the second start
    is under 3 s;
(b) training images/s of ``genforge train gan`` (a small model, ``--steps`` steps) from the
    folder (its cache, read ahead batch by batch) vs from the same images in an .npz (one array
    in memory), alternating ``--rounds`` times; the goal is within 5%;
(c) the same comparison with one trainer in one process, drawing 10 steps from each source in
    turn: the data path alone. On a CPU two processes of the same run can differ by ~10% in
    images/s whatever their data (measured on the 2-core development machine: the same trainer
    fed the same tensors ran 10-13% slower in one process than in another), so (c) is the
    number that says what the folder path costs.

    python benchmarks/folder_start.py [--n 20000] [--size 64] [--steps 150] [--rounds 2] [--dir DIR] [--device cpu]
    python benchmarks/folder_start.py --n 2000 --steps 20          # a quick check

Precision is fp32 and the memory format fixed, so no start measures the precision probe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SETTINGS = [
    "model.z_dim=64",
    "model.g_width=16",
    "model.d_width=16",
    "train.batch_size=64",
    "train.precision=fp32",
    "train.channels_last=false",
    "train.sample_every=0",
    "train.eval_every=0",
    "train.grid_images=16",
    "train.tensorboard=false",
]


# ---------------------------------------------------------------------------------------------
# Worker: one start, in its own process


def worker(args) -> None:
    from genforge import families  # noqa: PLC0415 (timed from here on: imports are part of a start)
    from genforge.training import runs  # noqa: PLC0415

    gan = families.get("gan")
    called = time.time()
    first: list[float] = []
    build = gan.build

    def timed_build(prepared, device, dtype):
        trainer = build(prepared, device, dtype)
        step = trainer.train_step

        def train_step(x, y):
            losses = step(x, y)
            if not first:
                first.append(time.time())
            return losses

        trainer.train_step = train_step
        return trainer

    gan = dataclasses.replace(gan, build=timed_build)
    sets = [*SETTINGS, f"train.steps={args.steps}", f"train.log_every={args.log_every}", f"train.device={args.device}"]
    config = gan.resolve("default", None, sets, {"data": {"source": args.source}})
    result = runs.train(gan, config, args.out)
    records = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["values"]["images_per_s"] for r in records if r["type"] == "train"]
    print(
        json.dumps(
            {"called": called, "first_step": first[0], "images_per_s": speeds[1:] or speeds, "steps": result.step}
        )
    )


def alternate(args) -> None:
    """One trainer, one process, batches drawn in turn from the folder's cache (read ahead) and
    from the .npz's array: the data path's cost alone, without the run-to-run differences of two
    processes (on a CPU the same run's images/s moves by several percent between processes)."""
    import torch  # noqa: PLC0415 (the worker's imports)

    from genforge import families  # noqa: PLC0415
    from genforge.data import load_dataset, open_dataset  # noqa: PLC0415
    from genforge.progress import SILENT  # noqa: PLC0415
    from genforge.training.batches import Batches, on_device  # noqa: PLC0415

    gan = families.get("gan")
    sets = [*SETTINGS, f"train.device={args.device}"]
    prepared = gan.prepare(gan.resolve("default", None, sets, {"data": {"source": args.source}}), SILENT)
    device = torch.device(args.device)
    trainer = gan.build(prepared, device, torch.float32)
    sources = {
        "folder": Batches(open_dataset(args.source), None, 64, 0, device),
        "npz": Batches(on_device(load_dataset(args.npz), device), None, 64, 0, device),
    }
    seconds = {name: 0.0 for name in sources}
    step = 0
    for round_ in range(args.rounds + 1):  # the first round warms up
        for name, batches in sources.items():
            began = time.perf_counter()
            for _ in range(10):
                x, y = batches.get(step)
                trainer.train_step(x, y)
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += (time.perf_counter() - began) if round_ else 0.0
    for batches in sources.values():
        batches.close()
    print(json.dumps({name: args.rounds * 10 * 64 / s for name, s in seconds.items()}))


def start(source: str, out: Path, steps: int, log_every: int, device: str, env: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a new run, never a resumed one (--dir may be reused)
    began = time.time()
    command = [sys.executable, __file__, "--worker", "--source", source, "--out", str(out), "--steps", str(steps)]
    command += ["--log-every", str(log_every), "--device", device]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    answer["from_process"] = answer["first_step"] - began
    answer["from_train"] = answer["first_step"] - answer["called"]
    return answer


# ---------------------------------------------------------------------------------------------
# Parent


def make_folder(folder: Path, n: int, size: int) -> None:
    """``n`` JPEGs of smooth random colour blobs (compressible like photos, unlike pure noise)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True)
        return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="images in the synthetic folder")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150, help="training steps per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="folder/npz alternations for (b)")
    parser.add_argument("--dir", type=Path, help="where the folder, the .npz and the runs go (default: a temp dir)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--alternate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--npz", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--log-every", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.alternate:
        return alternate(args)

    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import machine, table  # noqa: PLC0415 (after the path is set)

    with tempfile.TemporaryDirectory(prefix="genforge-folder-start-") as temp:
        root = args.dir or Path(temp)
        folder, cache = root / "images", root / "cache"
        env = {**os.environ, "GENFORGE_CACHE": str(cache), "PYTHONPATH": str(REPO / "src")}
        if not folder.is_dir():
            began = time.perf_counter()
            make_folder(folder, args.n, args.size)
            print(f"made {args.n} JPEGs in {time.perf_counter() - began:.1f} s: {folder}", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)  # ours: the first start must build the cache
        (root / "images.npz").unlink(missing_ok=True)
        log_every = max(1, min(10, args.steps // 4))
        npz = root / "images.npz"
        rows = []
        arms = [("first start (cache built)", folder), ("second start (cache reused)", folder)]
        arms.append(("the same images in an .npz (a baseline)", npz))
        for label, source in arms:
            if source == npz and not npz.exists():  # made from the cache, after the two starts
                code = "import sys, numpy as np; from genforge.data import load_dataset as f; "
                code += "np.savez(sys.argv[1], images=f(sys.argv[2]).images)"
                subprocess.run([sys.executable, "-c", code, str(npz), str(folder)], env=env, check=True)
            timing = start(str(source), root / f"start-{len(rows)}", 1, 1, args.device, env)
            row = {
                "start": label,
                "to first step, s": timing["from_process"],
                "of which genforge, s": timing["from_train"],
            }
            rows.append(row)
            print(f"{label}: {timing['from_process']:.2f} s", file=sys.stderr)

        speeds: dict[str, list[float]] = {"folder": [], "npz": []}
        for round_ in range(args.rounds):
            for name, source in (("folder", folder), ("npz", npz)):
                timing = start(str(source), root / f"speed-{name}-{round_}", args.steps, log_every, args.device, env)
                speeds[name] += timing["images_per_s"]
                print(f"round {round_ + 1} {name}: {np.mean(timing['images_per_s']):.0f} img/s", file=sys.stderr)

        alternation = max(2, args.steps // 20)
        command = [sys.executable, __file__, "--alternate", "--source", str(folder), "--npz", str(npz)]
        command += ["--rounds", str(alternation), "--device", args.device]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"worker failed:\n{done.stderr}")
        same = json.loads(done.stdout.strip().splitlines()[-1])

    folder_speed, npz_speed = float(np.median(speeds["folder"])), float(np.median(speeds["npz"]))
    print(f"\n{machine()} | git {git_commit()} | device {args.device}\n")
    print(
        f"{args.n} JPEGs of {args.size}x{args.size}; time to the first step of `genforge train gan` (goal: second < 3 s):\n"
    )
    print(table(rows, ["start", "to first step, s", "of which genforge, s"]))
    print(
        f"\nTraining images/s, median of the logging windows after the first, {args.rounds} x {args.steps} steps each:\n"
    )
    speed_rows = [
        {
            "data": "folder (cache, read ahead)",
            "images/s": folder_speed,
            "vs npz": f"{folder_speed / npz_speed - 1:+.1%}",
        },
        {"data": "same images in an .npz (in memory)", "images/s": npz_speed, "vs npz": ""},
    ]
    print(table(speed_rows, ["data", "images/s", "vs npz"]))
    print(f"\nThe same trainer in one process, 10 steps from each source in turn, {alternation} rounds:\n")
    alternating = [
        {
            "data": "folder (cache, read ahead)",
            "images/s": same["folder"],
            "vs npz": f"{same['folder'] / same['npz'] - 1:+.1%}",
        },
        {"data": "same images in an .npz (in memory)", "images/s": same["npz"], "vs npz": ""},
    ]
    print(table(alternating, ["data", "images/s", "vs npz"]))


if __name__ == "__main__":
    main()
