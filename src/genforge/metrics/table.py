"""The table of metrics: each score's name, label, unit, direction and who records, ranks and shows it.

One row per metric, read by everything that lists scores: ``genforge evaluate`` (which scores are
shown with their sample count), the in-training evaluation (which scores an ``eval`` record keeps)
and the training progress line, ``genforge tune`` (which scores a candidate keeps, which one ranks
the candidates and which break near-ties), the report (its rows, their labels, units, directions
and formats), and the report and the prior's evaluation for the scores recorded as training ends.
A new metric is one ``register(Metric(...))``; a metric whose ``compute`` is set is computed by
every evaluation of samples (``metrics.evaluate.evaluate_features``) beside the built-in ones.
docs/architecture.md, "Adding a metric", has an example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genforge.errors import GenforgeError

# ---------------------------------------------------------------------------------------------
# Formats


def number_text(value: float) -> str:
    """Four significant digits; thousands and more as a whole number with separators."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def count_text(n: float) -> str:
    """1234567 -> "1.23M"."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def _speed_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else number_text(value)


def _minutes_text(value: float) -> str:
    return f"{value:,.1f}"


# ---------------------------------------------------------------------------------------------
# The table

# Where a metric stands in `genforge tune`: "ranked" orders the candidates (the best wins; one
# metric has it), "tie-break" decides among the candidates within ``sampling.TIE`` of the best
# (the best sum wins), "kept" is recorded for each candidate and never ranked by (e.g. class
# accuracy, which the evaluator's own classifier may flatter); None: tune does not keep it.
TUNING = ("ranked", "tie-break", "kept")
# The report's table: "always" a row (a run without the score reads "—"), "if any" run has it, None: no row.
REPORT = ("always", "if any")
# The progress lines that show a metric: the training bar after each in-training evaluation, tune's
# line per candidate.
LINES = ("training", "tuning")

# (sample features (N, D), their class probabilities (N, K) or None, the real data's
# metrics.evaluate.Reference (which imports this table), the uint8 samples (N, H, W, C) or None)
# -> the value, or None where it does not apply (no class probabilities, say)
Compute = Callable[[np.ndarray, np.ndarray | None, Any, np.ndarray | None], float | None]


@dataclass(frozen=True)
class Metric:
    name: str  # the key in evaluate's JSON, metrics.jsonl and sampling.json
    label: str  # what the report calls it
    unit: str = ""
    better: str | None = None  # "lower" | "higher" | None (a reference: nobody "leads")
    counted: bool = False  # its value depends on the sample count n, so it is shown with n
    difference: bool = False  # the report compares runs by difference (fractions), not by ratio
    format: Callable[[float], str] = number_text  # the report's cell
    report: str | None = "if any"  # the report's row: one of REPORT, or None
    during_training: bool = False  # the in-training evaluation (train.eval_every) records it
    after_training: bool = False  # recorded once as training ends (a family's finish), not by evaluate
    tuning: str | None = None  # one of TUNING, or None
    shown: tuple[str, ...] = ()  # the progress lines (LINES) that show it
    old_names: tuple[str, ...] = ()  # what older runs' records called it
    compute: Compute | None = None  # computed beside the built-in scores of every sample evaluation

    def __post_init__(self) -> None:
        problems = []
        if self.better not in ("lower", "higher", None):
            problems.append(f"better must be 'lower', 'higher' or None, not {self.better!r}")
        if self.report not in (*REPORT, None):
            problems.append(f"report must be one of {REPORT} or None, not {self.report!r}")
        if self.tuning not in (*TUNING, None):
            problems.append(f"tuning must be one of {TUNING} or None, not {self.tuning!r}")
        elif self.tuning in ("ranked", "tie-break") and self.better is None:
            problems.append(f"tune cannot rank by a metric without a direction (tuning {self.tuning!r})")
        if not set(self.shown) <= set(LINES):
            problems.append(f"shown must name lines among {LINES}, not {self.shown!r}")
        if problems:
            raise GenforgeError(f"metric {self.name}: {'; '.join(problems)}")


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric (a later one of the same name replaces the earlier, in its place)."""
    METRICS[metric.name] = metric
    return metric


def find(name: str) -> Metric | None:
    """The metric called ``name``, or None."""
    return METRICS.get(name)


# In the order the report's rows, tune's columns and the records' keys follow.
for _metric in (
    Metric(
        "fd",
        "Frechet distance",
        better="lower",
        counted=True,
        report="always",
        during_training=True,
        tuning="ranked",
        shown=("training", "tuning"),
    ),
    Metric("fd_floor", "real-vs-real floor"),
    Metric("kid", "KID", better="lower", counted=True, report="always"),
    Metric(
        "precision", "precision", better="higher", difference=True, report="always", during_training=True, tuning="kept"
    ),
    Metric(
        "recall",
        "recall",
        better="higher",
        difference=True,
        report="always",
        during_training=True,
        tuning="tie-break",
        shown=("training", "tuning"),
    ),
    Metric("density", "density", better="higher", difference=True, report="always"),
    Metric(
        "coverage",
        "coverage",
        better="higher",
        difference=True,
        report="always",
        during_training=True,
        tuning="tie-break",
        shown=("tuning",),
    ),
    Metric(
        "classes_covered",
        "classes covered",
        "classes",
        "higher",
        report=None,
        during_training=True,
        tuning="kept",
        shown=("training",),
    ),
    # classes_covered over the classes the data has (the report shows "9/10")
    Metric("class_coverage", "class coverage", "classes", "higher", difference=True, report="always"),
    Metric("class_kl", "class KL", "nats", "lower", report="always", during_training=True, tuning="kept"),
    # a conditional model scored with the evaluator's classifier: how often it finds the class asked for
    Metric(
        "class_accuracy",
        "asked class found (conditional)",
        better="higher",
        difference=True,
        tuning="kept",
        shown=("tuning",),
    ),
    Metric("class_accuracy_min", "asked class found, worst class", better="higher", report=None, tuning="kept"),
    # The Inception Score's formula over the evaluator classifier's classes. With Inception
    # features there is none: the shipped FID weights have no classification head.
    Metric("is", "classifier score (IS formula)", better="higher"),
    # A prior's held-out loss measures its codes only, for its own VQ-VAE's codebook: it is no pixel
    # likelihood, and two priors over different VQ-VAEs are not comparable, so nothing is ranked.
    Metric(
        "code_nll", "prior NLL of the codes", "nats/code", after_training=True, old_names=("test_nll_nats_per_code",)
    ),
    Metric(
        "code_bits_per_dim",
        "prior code bits per pixel dim (not a pixel likelihood)",
        "bits",
        after_training=True,
        old_names=("test_bits_per_dim",),
    ),
    Metric("masked_code_ce", "MaskGIT masked-code cross-entropy (not a likelihood)", "nats/code", after_training=True),
    Metric("psnr", "reconstruction PSNR", "dB", "higher"),
    Metric("ssim", "reconstruction SSIM", better="higher", difference=True),
    Metric("codebook_usage", "codebook usage", better="higher", difference=True),
    Metric("train_images_per_s", "training images/s", "img/s", "higher", format=_speed_text, report="always"),
    Metric("sample_images_per_s", "sampling images/s", "img/s", "higher", format=_speed_text, report="always"),
    Metric("wall_minutes", "wall time", "min", "lower", format=_minutes_text, report="always"),
    Metric("parameters", "parameters", better="lower", format=count_text, report="always"),
):
    register(_metric)


# ---------------------------------------------------------------------------------------------
# What each reader asks (at call time, so a metric registered later is included)


def counted(name: str) -> bool:
    """Whether ``name``'s value depends on the sample count (shown with n)."""
    metric = find(name)
    return metric is not None and metric.counted


def during_training() -> list[str]:
    """The scores an in-training evaluation records."""
    return [m.name for m in METRICS.values() if m.during_training]


def after_training() -> list[str]:
    """The scores recorded as training ends, not by ``evaluate``."""
    return [m.name for m in METRICS.values() if m.after_training]


def shown_on(line: str) -> list[str]:
    """The scores a progress line (one of LINES) shows."""
    return [m.name for m in METRICS.values() if line in m.shown]


def tuned() -> list[str]:
    """The scores tune keeps for each candidate."""
    return [m.name for m in METRICS.values() if m.tuning is not None]


def tune_ranked() -> Metric:
    """The one metric tune ranks candidates by."""
    ranked = [m for m in METRICS.values() if m.tuning == "ranked"]
    if len(ranked) != 1:
        raise GenforgeError(f"tune ranks by one metric; the table marks {len(ranked)}: {[m.name for m in ranked]}")
    return ranked[0]


def tie_breaks() -> list[Metric]:
    """The metrics whose sum decides among tune's near-ties."""
    return [m for m in METRICS.values() if m.tuning == "tie-break"]


def reported() -> list[Metric]:
    """The report's rows, in order."""
    return [m for m in METRICS.values() if m.report is not None]


def computed() -> list[Metric]:
    """The metrics with their own ``compute``."""
    return [m for m in METRICS.values() if m.compute is not None]
