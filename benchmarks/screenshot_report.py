"""Render a genforge report.html with headless Chromium and check the picture is not blank.

    python benchmarks/screenshot_report.py runs/report.html /tmp/report.png [--size 1400,2400]

Exits non-zero with one line when Chromium is missing, fails, or draws an empty page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
MIN_COLOURS = 16  # a blank or error page has only a handful


def screenshot(page: Path, out: Path, size: str = "1400,2400", chromium: str = CHROMIUM, timeout: float = 60.0) -> int:
    """Screenshot ``page`` into ``out``; returns the number of distinct colours in it."""
    from PIL import Image

    if not Path(chromium).exists() and shutil.which(chromium) is None:
        raise SystemExit(f"error: {chromium} not found; install Debian's 'chromium' package")
    page, out = page.resolve(), out.resolve()
    if not page.is_file():
        raise SystemExit(f"error: {page}: no such report")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="genforge-chromium-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--screenshot={out}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"error: chromium took more than {timeout:.0f} s") from None
    if not out.is_file():
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: chromium wrote no screenshot (exit {done.returncode}): {detail}")
    with Image.open(out) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    count = len(colours) if colours is not None else 1 << 20
    if count < MIN_COLOURS:
        raise SystemExit(f"error: {out} looks blank ({count} distinct colours)")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html to render")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--size", default="1400,2400", help="window WIDTH,HEIGHT in pixels")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    count = screenshot(args.report, args.out, args.size, args.chromium)
    print(f"{args.out}: {count} distinct colours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
