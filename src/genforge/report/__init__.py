"""HTML reports: one run, or several side by side, as a single self-contained file.

``collect`` reads what a run folder already holds (config, newest checkpoint's metadata and
tensor shapes, ``metrics.jsonl``, sample grids) without building a model or unpickling anything;
``write_report`` turns summaries into one HTML file with every picture embedded.
"""

from genforge.report.collect import RunSummary, collect
from genforge.report.render import curves_png, render, write_report
from genforge.report.table import labels, metric_table, notes, verdicts

__all__ = [
    "RunSummary",
    "collect",
    "curves_png",
    "labels",
    "metric_table",
    "notes",
    "render",
    "verdicts",
    "write_report",
]
