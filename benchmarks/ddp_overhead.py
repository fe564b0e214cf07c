"""What DistributedDataParallel costs on CPU: 2 processes x 1 thread against 1 process x 2 threads.

Both train the same family on the same synthetic data with the same global batch, through the
real command line (``torchrun --standalone --nproc-per-node 2 -m genforge train ...`` against
``python -m genforge train ...`` with OMP_NUM_THREADS=2), and report images/s of the second half
of the run (the train record of metrics.jsonl logged at the last step, so start-up and warm-up are
left out). The ratio DDP / one process is the figure of merit (goal: >= 0.85). Run it on a quiet
machine with at least 2 free cores.

    python benchmarks/ddp_overhead.py [--family gan|vqvae] [--steps 200] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FAMILIES = {
    # the families' default networks at 32x32 colour; fp32 so both sides run the same arithmetic
    "gan": ["--set", "model.d_norm=spectral"],
    "vqvae": [],
}


def write_data(path: Path, count: int = 4096) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8))
    return path


def images_per_second(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "train"][-1]["values"]["images_per_s"]


def train(command: list[str], threads: int, out: Path, args, data: Path) -> float:
    sets = {
        "train.batch_size": args.batch,
        "train.precision": "fp32",
        "train.channels_last": "false",
        "train.log_every": args.steps // 2,
        "train.checkpoint_every": 10 * args.steps,
        "train.sample_every": 0,
        "train.grid_images": 4,
        "train.tensorboard": "false",
        "train.device": "cpu",
    }
    cmd = [*command, "-m", "genforge", "train", args.family, "--data", str(data), "--out", str(out)]
    cmd += ["--steps", str(args.steps), "--quiet", *FAMILIES[args.family]]
    cmd += [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return images_per_second(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="gan")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="the global batch (each DDP rank takes half)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting; the best is kept")
    args = parser.parse_args()
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    single = [sys.executable]
    with tempfile.TemporaryDirectory() as temp:
        data = write_data(Path(temp) / "data.npz")
        results: dict[str, list[float]] = {"1 process x 2 threads": [], "2 processes x 1 thread (DDP, gloo)": []}
        for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
            for label, command, threads in (
                ("1 process x 2 threads", single, 2),
                ("2 processes x 1 thread (DDP, gloo)", ddp, 1),
            ):
                out = Path(temp) / f"{len(results[label])}-{threads}"
                results[label].append(train(command, threads, out, args, data))
                print(f"  {label:<36} run {repeat + 1}: {results[label][-1]:8.1f} images/s", flush=True)
    best = {label: max(values) for label, values in results.items()}
    one, two = best["1 process x 2 threads"], best["2 processes x 1 thread (DDP, gloo)"]
    print(f"{args.family}, global batch {args.batch}, {args.steps} steps, best of {args.repeats}:")
    for label, value in best.items():
        print(f"  {label:<36} {value:8.1f} images/s")
    verdict = "meets" if two / one >= 0.85 else "misses"
    print(f"  ratio DDP / one process: {two / one:.2f} ({verdict} the goal of >= 0.85)")


if __name__ == "__main__":
    main()
