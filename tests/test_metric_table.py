"""The table of metrics (metrics/table.py): a metric defined in this file alone is computed by every
evaluation of samples, recorded during training, kept by tune and shown in the report; tune ranks by
the table; the readers' lists are the table's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genforge.errors import GenforgeError
from genforge.families.sampling import best, read_sampling
from genforge.metrics import table
from genforge.metrics.table import METRICS, Metric, register
from genforge.report import collect, metric_table
from synthetic import cli, install_evaluator, records, train, write_idx_folder

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# ---------------------------------------------------------------------------------------------
# The toy metric of docs/architecture.md, defined in this file only
# ---------------------------------------------------------------------------------------------


def mean_gap(features, probs, reference, images):
    """How far the samples' mean feature lies from the real data's: the Frechet distance's first term."""
    return float(np.linalg.norm(features.mean(axis=0) - reference.mu))


MEAN_GAP = Metric(
    "mean_gap",
    "feature mean gap",
    better="lower",
    during_training=True,  # the in-training evaluation records it
    tuning="kept",  # tune keeps it for every candidate, and never ranks by it
    compute=mean_gap,
)


@pytest.fixture
def toy_metric():
    register(MEAN_GAP)
    yield MEAN_GAP
    del METRICS[MEAN_GAP.name]  # registered for this test only


def test_a_metric_defined_in_a_test_is_evaluated_recorded_tuned_and_reported(toy_metric, tmp_path, monkeypatch):
    data = write_idx_folder(tmp_path / "bars")
    install_evaluator(tmp_path / "cache", str(data))
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    run = train("gan", tmp_path / "gan", data=data, steps=4, extra=["train.eval_every=2", "train.eval_samples=16"])
    during = [r["values"] for r in records(run, "eval")]
    assert len(during) == 2 and all(v["mean_gap"] >= 0 for v in during)

    code, out, err = cli("evaluate", run, "--n", 32, "--device", "cpu")
    assert code == 0, err
    scores = records(run, "evaluation")[-1]["values"]
    assert 0 < scores["mean_gap"] ** 2 <= scores["fd"] + 1e-6  # fd = |mu_r - mu_g|^2 + a trace term >= 0
    assert "mean_gap: " in out

    code, out, err = cli("tune", run, "--n", 24, "--quiet", "--device", "cpu")
    assert code == 0, err
    tuned = read_sampling(run)
    assert all(c["mean_gap"] >= 0 for c in tuned["candidates"]) and "mean_gap" in tuned["scores"]
    assert tuned["chosen"] == best(tuned["candidates"])["options"]  # kept: not ranked by
    assert "| mean_gap |" in out

    rows = {row["key"]: row for row in metric_table([collect(run)])}
    assert rows["mean_gap"]["metric"] == "feature mean gap" and rows["mean_gap"]["values"] == [scores["mean_gap"]]
    code, _, err = cli("compare", run, "--out", tmp_path / "report.html")
    assert code == 0, err
    assert "feature mean gap" in (tmp_path / "report.html").read_text()


def test_the_toy_metric_is_gone_after_its_test():
    assert "mean_gap" not in METRICS and all(m.compute is None for m in METRICS.values())


def test_the_toy_metric_is_the_one_in_the_docs():
    doc = DOCS.read_text()
    section = doc[doc.index("## Adding a metric") :]
    for text in ("def mean_gap(features, probs, reference, images):", "MEAN_GAP = Metric(", "register(MEAN_GAP)"):
        assert text in section, text


# ---------------------------------------------------------------------------------------------
# Tune ranks by the table
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sharpness():
    """A tie-break metric (the higher the better) for one test."""
    metric = register(Metric("sharpness", "sharpness", better="higher", tuning="tie-break"))
    yield metric
    del METRICS[metric.name]


def test_tune_breaks_ties_with_the_tables_tie_break_metrics(sharpness):
    b = {"options": {"t": 2}, "fd": 3.0, "recall": 0.1, "coverage": 0.1, "sharpness": 2.0}
    c = {"options": {"t": 3}, "fd": 3.02, "recall": 0.5, "coverage": 0.5, "sharpness": 0.0}  # within 1% of b
    d = {"options": {"t": 4}, "fd": 3.5, "recall": 1.0, "coverage": 1.0, "sharpness": 9.0}  # no tie: out
    assert best([b, c, d]) is b  # 0.1 + 0.1 + 2 beats 0.5 + 0.5 + 0
    del METRICS["sharpness"]
    assert best([b, c, d]) is c  # recall + coverage alone
    register(sharpness)  # for the fixture to remove


def test_kept_metrics_never_rank():
    kept = [m.name for m in METRICS.values() if m.tuning == "kept"]
    assert "class_accuracy" in kept and "class_accuracy_min" in kept
    b = {"options": {"t": 2}, "fd": 3.0, "recall": 0.5, "coverage": 0.5, "class_accuracy": 0.1}
    c = {"options": {"t": 3}, "fd": 3.02, "recall": 0.5, "coverage": 0.5, "class_accuracy": 1.0}
    assert best([b, c]) is b  # a full tie goes to the earlier, whatever the class accuracy


# ---------------------------------------------------------------------------------------------
# The built-in table: what each reader gets from it
# ---------------------------------------------------------------------------------------------


def test_the_readers_lists_come_from_the_table():
    """The keys and order of metrics.jsonl's eval records, sampling.json's candidates and the
    progress lines: unchanged from the lists each module kept before the table."""
    assert table.during_training() == ["fd", "precision", "recall", "coverage", "classes_covered", "class_kl"]
    assert table.tuned() == [
        "fd",
        "precision",
        "recall",
        "coverage",
        "classes_covered",
        "class_kl",
        "class_accuracy",
        "class_accuracy_min",
    ]
    assert table.tune_ranked().name == "fd" and [m.name for m in table.tie_breaks()] == ["recall", "coverage"]
    assert table.shown_on("training") == ["fd", "recall", "classes_covered"]
    assert table.shown_on("tuning") == ["fd", "recall", "coverage", "class_accuracy"]
    assert table.after_training() == ["code_nll", "code_bits_per_dim", "masked_code_ce"]
    assert [m.name for m in METRICS.values() if m.counted] == ["fd", "kid"]
    assert [m.name for m in table.reported() if m.report == "always"] == [
        "fd",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "class_coverage",
        "class_kl",
        "train_images_per_s",
        "sample_images_per_s",
        "wall_minutes",
        "parameters",
    ]


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"better": "up"}, "better must be"),
        ({"report": "sometimes"}, "report must be"),
        ({"tuning": "ranked"}, "without a direction"),
        ({"tuning": "first"}, "tuning must be"),
        ({"shown": ("evaluate",)}, "shown must name"),
    ],
)
def test_a_malformed_metric_is_refused_with_its_name(fields, words):
    with pytest.raises(GenforgeError, match=f"metric toy: .*{words}"):
        Metric("toy", "toy", **fields)


def test_tune_needs_exactly_one_ranked_metric(monkeypatch):
    monkeypatch.setitem(METRICS, "second", Metric("second", "second", better="lower", tuning="ranked"))
    with pytest.raises(GenforgeError, match="one metric"):
        table.tune_ranked()


def test_formats():
    assert table.number_text(12345.6) == "12,346" and table.number_text(0.012345) == "0.01235"
    assert table.count_text(1_234_567) == "1.23M" and table.count_text(999) == "999"
    assert METRICS["wall_minutes"].format(12.345) == "12.3"
    assert (
        METRICS["train_images_per_s"].format(1234.5) == "1,234" and METRICS["train_images_per_s"].format(12.5) == "12.5"
    )
