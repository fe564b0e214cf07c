"""Resident memory while reading a packed dataset batch by batch through whole epochs.

Writes a synthetic pack (about 1 GiB by default) into a temporary folder, then sweeps it in
random batches twice: with PackedImages.take (positioned reads) and, for comparison, by fancy
indexing a numpy memmap of the same file. Prints the process's RSS (anonymous and file-backed
parts, from /proc/self/status) after each quarter epoch. Linux only.

    python benchmarks/packed_rss.py [--gib 1.0] [--batch 256] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from genforge.data import PackedImages, PackWriter

SHAPE = (64, 64, 3)


def rss_mib() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return fields


def report(label: str) -> None:
    memory = rss_mib()
    print(
        f"  {label:<28} RSS {memory['VmRSS']:7.0f} MiB (anon {memory['RssAnon']:6.0f}, file {memory['RssFile']:6.0f})"
    )


def write(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    with PackWriter(folder, *SHAPE) as writer:
        for start in range(0, count, 4096):
            writer.append(rng.integers(0, 256, (min(4096, count - start), *SHAPE), dtype=np.uint8))


def sweep(read, count: int, batch: int, epochs: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    checksum = 0
    for epoch in range(epochs):
        order = rng.permutation(count)
        quarter = max(1, (count // batch) // 4)
        for step, start in enumerate(range(0, count, batch)):
            checksum += int(read(order[start : start + batch])[:, 0, 0, 0].sum())
            if (step + 1) % quarter == 0:
                report(f"epoch {epoch + 1}, batch {step + 1}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    count = int(args.gib * 2**30) // int(np.prod(SHAPE))
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as temp:
        folder = Path(temp) / "pack"
        write(folder, count)
        data = PackedImages(folder)
        print(f"{count} images of {SHAPE}, {data.nbytes / 2**30:.2f} GiB, batch {args.batch}")
        report("opened")
        print("PackedImages.take (positioned reads):")
        seconds = sweep(data.take, count, args.batch, args.epochs)
        print(f"  {args.epochs * count / seconds:,.0f} images/s")
        print("np.memmap fancy indexing (for comparison):")
        mapped = np.memmap(folder / "images.u8", np.uint8, "r", shape=data.shape)
        seconds = sweep(lambda index: mapped[index], count, args.batch, args.epochs)
        print(f"  {args.epochs * count / seconds:,.0f} images/s")
        data.close()


if __name__ == "__main__":
    main()
