"""``genforge compare`` and ``genforge report``: HTML reports over run folders."""

from __future__ import annotations

from pathlib import Path

from genforge.report import collect, write_report


def compare(
    runs: list[str | Path], out: str | Path, *, data: str | None = None, title: str = "genforge compare"
) -> Path:
    """One page, runs side by side; with ``data``, only evaluations made on that data count."""
    return write_report([collect(run, data=data) for run in runs], Path(out), title=title)


def report(run: str | Path, out: str | Path | None = None) -> Path:
    """One run's page, by default ``RUN/report.html``."""
    run = Path(run)
    return write_report([collect(run)], Path(out) if out else run / "report.html", title=f"genforge report: {run.name}")
