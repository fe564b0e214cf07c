"""The report's metric table, its verdicts and its caveats: numbers from run summaries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genforge.report.collect import RunSummary, is_number

# ---------------------------------------------------------------------------------------------
# The metric table and verdicts


@dataclass(frozen=True)
class Metric:
    key: str
    name: str
    unit: str
    better: str | None  # "lower" | "higher" | None (a reference, nobody "leads")
    value: Callable[[RunSummary], float | None]
    always: bool = True  # shown even when no run has it (so a missing score reads as "—")
    difference: bool = False  # compare by difference (fractions) rather than by ratio


def _class_coverage(run: RunSummary) -> float | None:
    covered, total = run.score("classes_covered"), run.score("num_classes")
    return covered / total if covered is not None and total else None


def _last_log(key: str) -> Callable[[RunSummary], float | None]:
    return lambda run: next((float(r[key]) for r in reversed(run.logs) if is_number(r.get(key))), None)


METRICS = [
    Metric("fd", "Frechet distance", "", "lower", lambda r: r.score("fd")),
    Metric("fd_floor", "real-vs-real floor", "", None, lambda r: r.score("fd_floor"), always=False),
    Metric("kid", "KID", "", "lower", lambda r: r.score("kid")),
    Metric("precision", "precision", "", "higher", lambda r: r.score("precision"), difference=True),
    Metric("recall", "recall", "", "higher", lambda r: r.score("recall"), difference=True),
    Metric("density", "density", "", "higher", lambda r: r.score("density"), difference=True),
    Metric("coverage", "coverage", "", "higher", lambda r: r.score("coverage"), difference=True),
    Metric("class_coverage", "class coverage", "classes", "higher", _class_coverage, difference=True),
    Metric("class_kl", "class KL", "nats", "lower", lambda r: r.score("class_kl")),
    Metric(
        "class_accuracy",
        "asked class found (conditional)",
        "",
        "higher",
        lambda r: r.score("class_accuracy"),
        always=False,
        difference=True,
    ),
    # The Inception Score's formula over the evaluator classifier's classes. With Inception
    # features there is none: the shipped FID weights have no classification head.
    Metric("is", "classifier score (IS formula)", "", "higher", lambda r: r.score("is"), always=False),
    # A prior's held-out loss measures its codes only, for its own VQ-VAE's codebook: it is no pixel
    # likelihood, and two priors over different VQ-VAEs are not comparable, so nothing is ranked.
    Metric("code_nll", "prior NLL of the codes", "nats/code", None, lambda r: r.score("code_nll"), always=False),
    Metric(
        "code_bits_per_dim",
        "prior code bits per pixel dim (not a pixel likelihood)",
        "bits",
        None,
        lambda r: r.score("code_bits_per_dim"),
        always=False,
    ),
    Metric(
        "masked_code_ce",
        "MaskGIT masked-code cross-entropy (not a likelihood)",
        "nats/code",
        None,
        lambda r: r.score("masked_code_ce"),
        always=False,
    ),
    Metric("psnr", "reconstruction PSNR", "dB", "higher", lambda r: r.score("psnr"), always=False),
    Metric("ssim", "reconstruction SSIM", "", "higher", lambda r: r.score("ssim"), always=False, difference=True),
    Metric(
        "codebook_usage", "codebook usage", "", "higher", _last_log("codebook_usage"), always=False, difference=True
    ),
    Metric("train_images_per_s", "training images/s", "img/s", "higher", lambda r: r.train_images_per_s),
    Metric("sample_images_per_s", "sampling images/s", "img/s", "higher", lambda r: r.score("sample_images_per_s")),
    Metric(
        "wall_minutes",
        "wall time",
        "min",
        "lower",
        lambda r: r.wall_seconds / 60 if r.wall_seconds is not None else None,
    ),
    Metric("parameters", "parameters", "", "lower", lambda r: r.total_parameters),
]


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
    for m in METRICS:
        values = [m.value(run) for run in runs]
        if not m.always and all(v is None for v in values):
            continue
        leader = _leader(values, m.better)
        name, shown = m.name, [display(m.key, run, v) for run, v in zip(runs, values)]
        if m.key in COUNTED:
            name, shown = _with_counts(m.key, name, shown, runs)
        rows.append(
            {
                "metric": name,
                "key": m.key,
                "unit": m.unit,
                "better": m.better,
                "values": values,
                "display": shown,
                "leader": names[leader] if leader is not None else None,
                "leader_index": leader,
            }
        )
    return rows


# Scores whose value depends on how many samples were scored: shown with that count, the
# Frechet distance named FID when every run was scored with Inception features.
COUNTED = ("fd", "kid")


def _with_counts(key: str, name: str, shown: list[str], runs: list[RunSummary]) -> tuple[str, list[str]]:
    """The row's name and cells with the evaluations' sample counts: in the name ("FID (n=1,000)")
    when the runs that have the score share one, else in each cell."""
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
    specs = {m.key: m for m in METRICS}
    for row in metric_table(runs):
        i = row["leader_index"]
        if i is None:
            continue
        others = [(v, j) for j, v in enumerate(row["values"]) if j != i and v is not None and math.isfinite(v)]
        best_other, j = sorted(others, reverse=row["better"] == "higher")[0]
        lead = row["values"][i]
        if specs[row["key"]].difference or lead <= 0 or best_other <= 0:
            margin = f"{_number(abs(lead - best_other))} {row['better']}"
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


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def count_text(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def display(key: str, run: RunSummary, value: float | None, brief: bool = False) -> str:
    if value is None:
        return "—"
    if key == "class_coverage":
        return f"{run.score('classes_covered'):.0f}/{run.score('num_classes'):.0f}"
    if key == "kid" and run.score("kid_std") is not None and not brief:
        return f"{_number(value)} ± {_number(run.score('kid_std'))}"
    if key == "parameters":
        return count_text(value)
    if key in ("train_images_per_s", "sample_images_per_s") and value >= 100:
        return f"{value:,.0f}"
    if key == "wall_minutes":
        return f"{value:,.1f}"
    return _number(value)
