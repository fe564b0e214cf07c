"""``genforge compare`` and ``genforge report``: HTML reports over run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from genforge.commands.registry import Command
from genforge.report import collect, write_report
from genforge.runfolder import RunFolder


def compare(
    runs: list[str | Path], out: str | Path, *, data: str | None = None, title: str = "genforge compare"
) -> Path:
    """One page, runs side by side; with ``data``, only evaluations made on that data count."""
    return write_report([collect(run, data=data) for run in runs], Path(out), title=title)


def report(run: str | Path, out: str | Path | None = None) -> Path:
    """One run's page, by default ``RUN/report.html``."""
    run = Path(run)
    return write_report(
        [collect(run)], Path(out) if out else RunFolder(run).report, title=f"genforge report: {run.name}"
    )


# ---------------------------------------------------------------------------------------------
# The command line: genforge compare, genforge report
# ---------------------------------------------------------------------------------------------


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", type=Path, nargs="+", help="run folders")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--data", help="only count evaluations made on this data")
    p.add_argument("--title", default="genforge compare", help="the report's heading")


def run_compare(args: argparse.Namespace) -> int:
    print(f"wrote {compare(args.runs, args.out, data=args.data, title=args.title)}")
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a run folder")
    p.add_argument("--out", type=Path, help="the HTML file to write (default RUN/report.html)")


def run_report(args: argparse.Namespace) -> int:
    print(f"wrote {report(args.run, args.out)}")
    return 0


COMPARE = Command("compare", "side-by-side HTML report of several runs", add_compare_arguments, run_compare)
REPORT = Command("report", "HTML report of one run (default: RUN/report.html)", add_report_arguments, run_report)
