"""`genforge compare` / `report` end to end: two evaluated runs -> one self-contained HTML file whose
numbers are the runs' own latest evaluation records."""

from __future__ import annotations

import pytest

from genforge import report
from synthetic import cli, install_evaluator, one_error, records, train, write_npz

COMPARED = ("fd", "kid", "precision", "recall", "coverage")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two tiny GAN runs (different seeds and lengths), each evaluated twice: the latest record counts."""
    root = tmp_path_factory.mktemp("compare")
    data, cache = write_npz(root / "bars.npz"), root / "cache"
    install_evaluator(cache, str(data))
    patch = pytest.MonkeyPatch()
    patch.setenv("GENFORGE_CACHE", str(cache))
    try:
        runs = [
            train("gan", root / "a", data=data, steps=3),
            train("gan", root / "b", data=data, steps=5, options=["--seed", "1"]),
        ]
        for run in runs:
            for seed in (0, 1):
                code, _, err = cli("evaluate", run, "--n", 64, "--seed", seed, "--device", "cpu")
                assert code == 0, err
    finally:
        patch.undo()
    return runs


def test_compare_writes_self_contained_html(evaluated, tmp_path):
    out = tmp_path / "r.html"
    code, stdout, err = cli("compare", *evaluated, "--out", out)
    assert code == 0, err
    assert stdout.strip() == f"wrote {out}"
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 2  # at least each run's sample grid
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for name in ("a", "b"):
        assert f"{name} (gan)" in page


def test_table_numbers_are_the_latest_evaluation_records(evaluated, tmp_path):
    rows = {row["key"]: row for row in report.metric_table([report.collect(run) for run in evaluated])}
    for i, run in enumerate(evaluated):
        first, latest = (r["values"] for r in records(run, "evaluation"))
        assert first["fd"] != latest["fd"]  # so the check below tells "latest" from "first"
        for key in COMPARED:
            assert rows[key]["values"][i] == latest[key], (run.name, key)
    page_path = tmp_path / "r.html"
    assert cli("compare", *evaluated, "--out", page_path)[0] == 0
    page = page_path.read_text()
    for key in COMPARED:
        for shown in rows[key]["display"]:
            assert shown in page


def test_report_of_one_run(evaluated):
    run = evaluated[0]
    code, out, err = cli("report", run)
    assert code == 0, err
    assert (run / "report.html").is_file() and out.strip() == f"wrote {run / 'report.html'}"
    assert "data:image/png;base64," in (run / "report.html").read_text()


def test_compare_of_a_folder_that_is_not_a_run(evaluated, tmp_path):
    (tmp_path / "stuff").mkdir()
    code, _, err = cli("compare", evaluated[0], tmp_path / "stuff", "--out", tmp_path / "r.html")
    assert code == 2
    assert "not a genforge run folder" in one_error(err)
    assert not (tmp_path / "r.html").exists()
