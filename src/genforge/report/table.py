"""The report's metric table, its verdicts and its caveats: numbers from run summaries."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from genforge.metrics.table import Metric, find, number_text, reported
from genforge.report.collect import RunSummary, is_number

# ---------------------------------------------------------------------------------------------
# The metric table and verdicts: the rows are metrics.table's reported metrics


def _class_coverage(run: RunSummary) -> float | None:
    covered, total = run.score("classes_covered"), run.score("num_classes")
    return covered / total if covered is not None and total else None


def _last_log(key: str) -> Callable[[RunSummary], float | None]:
    return lambda run: next((float(r[key]) for r in reversed(run.logs) if is_number(r.get(key))), None)


# Rows whose value is not the run's score of the same name: computed from two scores, from the
# training logs or from the checkpoint. Every other row reads ``run.score(name)``.
VALUES: dict[str, Callable[[RunSummary], float | None]] = {
    "class_coverage": _class_coverage,
    "codebook_usage": _last_log("codebook_usage"),
    "train_images_per_s": lambda r: r.train_images_per_s,
    "wall_minutes": lambda r: r.wall_seconds / 60 if r.wall_seconds is not None else None,
    "parameters": lambda r: r.total_parameters,
}


def value(metric: Metric, run: RunSummary) -> float | None:
    """``run``'s value of a reported metric, or None."""
    read = VALUES.get(metric.name)
    return read(run) if read is not None else run.score(metric.name)


def labels(runs: list[RunSummary]) -> list[str]:
    """Run names, made unique with the parent folder (then a number) where two share one."""
    names = [r.name for r in runs]
    out = [f"{r.path.resolve().parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]
    return [f"{label} #{i + 1}" if out.count(label) > 1 else label for i, label in enumerate(out)]


def metric_table(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """One row per metric: metric, key, unit, better, values (one per run, None if missing),
    display (formatted strings, "—" if missing) and leader (a run label, or None)."""
    names = labels(runs)
    rows = []
    for m in reported():
        values = [value(m, run) for run in runs]
        if m.report != "always" and all(v is None for v in values):
            continue
        leader = _leader(values, m.better)
        name, shown = m.label, [display(m.name, run, v) for run, v in zip(runs, values)]
        if m.counted:
            name, shown = _with_counts(m.name, name, shown, runs)
        rows.append(
            {
                "metric": name,
                "key": m.name,
                "unit": m.unit,
                "better": m.better,
                "values": values,
                "display": shown,
                "leader": names[leader] if leader is not None else None,
                "leader_index": leader,
            }
        )
    return rows


def _with_counts(key: str, name: str, shown: list[str], runs: list[RunSummary]) -> tuple[str, list[str]]:
    """The row's name and cells with the evaluations' sample counts (a metric whose value depends on
    how many samples were scored): in the name ("FID (n=1,000)") when the runs that have the score
    share one, else in each cell. The Frechet distance is named FID when every run was scored with
    Inception features."""
    scored = [(run.evaluation or {}) if text != "—" else {} for run, text in zip(runs, shown)]
    features = {e.get("features") for e in scored if e}
    if key == "fd" and features == {"inception"}:
        name = "FID"
    counts = [e.get("n") if is_number(e.get("n")) else None for e in scored]
    seen = {n for n in counts if n is not None}
    if len(seen) == 1:
        return f"{name} (n={seen.pop():,})", shown
    cells = [text if n is None or text == "—" else f"{text} (n={n:,})" for text, n in zip(shown, counts)]
    return name, cells


def _leader(values: list[float | None], better: str | None) -> int | None:
    """Index of the best value; None with fewer than two values, no direction, or a tie."""
    present = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if better is None or len(present) < 2:
        return None
    ranked = sorted(present, reverse=better == "higher")
    return None if ranked[0][0] == ranked[1][0] else ranked[0][1]


def verdicts(runs: list[RunSummary]) -> list[str]:
    """ "Frechet distance: gan leads (12.3 vs 45.6, 3.7x lower)", one per metric with a leader."""
    out = []
    specs = {m.name: m for m in reported()}
    for row in metric_table(runs):
        i = row["leader_index"]
        if i is None:
            continue
        others = [(v, j) for j, v in enumerate(row["values"]) if j != i and v is not None and math.isfinite(v)]
        best_other, j = sorted(others, reverse=row["better"] == "higher")[0]
        lead = row["values"][i]
        if specs[row["key"]].difference or lead <= 0 or best_other <= 0:
            margin = f"{number_text(abs(lead - best_other))} {row['better']}"
        else:
            margin = f"{max(lead, best_other) / min(lead, best_other):.1f}x {row['better']}"
        shown = [display(row["key"], runs[k], row["values"][k], brief=True) for k in (i, j)]
        versus = shown[1] if len(runs) == 2 else f"{shown[1]} for {labels(runs)[j]}"
        out.append(f"{row['metric']}: {row['leader']} leads ({shown[0]} vs {versus}, {margin})")
    return out


def notes(runs: list[RunSummary]) -> list[str]:
    """Caveats a reader needs before trusting the table."""
    out = []
    names = labels(runs)
    for name, run in zip(names, runs):
        if run.evaluation is None:
            out.append(f"{name}: no evaluation yet; run `genforge evaluate {run.path}` for scores")
        elif run.evaluation.get("collapsed"):
            out.append(f"{name}: the evaluation flags mode collapse (samples miss whole classes)")
        out.extend(f"{name}: {problem}" for problem in run.problems)
    evaluated = [r.evaluation for r in runs if r.evaluation is not None]
    for key, what in (("features", "feature networks"), ("data", "data sets"), ("n", "sample counts")):
        seen = sorted({str(e[key]) for e in evaluated if key in e})
        if len(seen) > 1:
            out.append(f"evaluations use different {what} ({', '.join(seen)}): scores are not directly comparable")
    return out


# ---------------------------------------------------------------------------------------------
# Formatting


def display(key: str, run: RunSummary, value: float | None, brief: bool = False) -> str:
    """A cell: the metric's own format, but class coverage as "covered/classes" and KID with its
    spread (unless ``brief``)."""
    if value is None:
        return "—"
    if key == "class_coverage":
        return f"{run.score('classes_covered'):.0f}/{run.score('num_classes'):.0f}"
    if key == "kid" and run.score("kid_std") is not None and not brief:
        return f"{number_text(value)} ± {number_text(run.score('kid_std'))}"
    metric = find(key)
    return metric.format(value) if metric is not None else number_text(value)
