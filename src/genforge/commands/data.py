"""`genforge data info | fetch | pack`: inspect, locate and pack datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genforge import data as gdata
from genforge.commands.registry import Command, count
from genforge.config import FITS
from genforge.errors import GenforgeError
from genforge.images import save_grid
from genforge.progress import Progress, Reporter

FIT_HELP = "how images reach --resolution (default none: they must already have it)"


def add_arguments(data: argparse.ArgumentParser) -> None:
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser("info", help="count, shape, channels, classes, value range")
    info.add_argument("source", help="a named dataset or a path genforge reads")
    info.add_argument("--split", default="train", choices=["train", "test", "all"], help="which split (default train)")
    info.add_argument("--resolution", type=count(1), help="fit every image to this square side")
    info.add_argument("--fit", default="none", choices=[f for f in FITS if f != "auto"], help=FIT_HELP)
    info.add_argument("--grid", type=Path, help="also write a grid of examples to this PNG")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fetch = dsub.add_parser("fetch", help="say where a named dataset is, or how to install it (never downloads)")
    fetch.add_argument("name", help="fashion-mnist, mnist or emoji")
    pack = dsub.add_parser("pack", help="pack a dataset once into a folder that training reads batch by batch")
    pack.add_argument("source", help="a named dataset or a path genforge reads (folder, zip, IDX, CIFAR, npz)")
    pack.add_argument("--out", type=Path, required=True, help="the packed dataset's folder")
    pack.add_argument("--split", default="train", choices=["train", "test", "all"], help="which split (default train)")
    pack.add_argument("--resolution", type=count(1), help="fit every image to this square side")
    pack.add_argument("--fit", default="none", choices=[f for f in FITS if f != "auto"], help=FIT_HELP)
    pack.add_argument("--channels", type=int, choices=[1, 3], help="convert to grey (1) or colour (3)")
    pack.add_argument("--chunk", type=count(1), default=1024, help="images read and written at a time")
    pack.add_argument("--overwrite", action="store_true", help="replace an existing packed dataset at --out")
    pack.add_argument("--json", action="store_true", help="print a JSON summary")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        print(gdata.fetch(args.name))
        return 0
    if args.data_command == "pack":
        return _pack(args)
    if args.fit != "none" and args.resolution is None:
        raise GenforgeError("--fit needs --resolution")
    d = gdata.open_dataset(args.source, split=args.split, resolution=args.resolution, fit=args.fit, reporter=Reporter())
    facts = gdata.describe(d)  # streams a packed dataset chunk by chunk
    if args.json:
        print(json.dumps(facts))
    else:
        for key, value in facts.items():
            print(f"{key:>14}: {value}")
    if args.grid is not None:
        save_grid(d.take(np.arange(min(64, len(d)))), args.grid)
        print(f"wrote a grid of {min(64, len(d))} examples to {args.grid}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    if args.fit != "none" and args.resolution is None:
        raise GenforgeError("--fit needs --resolution")
    reporter = Reporter(enabled=not args.json)  # --json is read by programs: no bar
    bars: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:  # the total is known once the source is open
            bars.append(reporter.progress(total=total, unit="image", desc="packing"))
        bars[0].update(done - bars[0].n)

    try:
        summary = gdata.pack_dataset(
            args.source,
            args.out,
            split=args.split,
            resolution=args.resolution,
            fit=args.fit,
            channels=args.channels,
            chunk=args.chunk,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(summary))
    else:
        count, height, width, channels = summary["shape"]
        size = summary["bytes"] / 2**30
        print(f"packed {count} images of {width}x{height}x{channels} ({size:.2f} GiB) into {summary['out']}")
    return 0


DATA = Command("data", "inspect or locate datasets", add_arguments, run)
