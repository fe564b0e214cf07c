"""The HTML report: numbers straight from metrics.jsonl, leaders picked by direction, pictures embedded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genforge import checkpoint as ckpt
from genforge import report
from genforge.errors import GenforgeError
from genforge.images import save_grid

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")

GAN_EVAL = {
    "fd": 12.3,
    "kid": 0.0123,
    "kid_std": 0.0011,
    "precision": 0.82,
    "recall": 0.41,
    "density": 0.95,
    "coverage": 0.77,
    "is": 8.25,
    "class_kl": 0.031,
    "classes_covered": 10.0,
    "num_classes": 10.0,
    "collapsed": 0.0,
    "sample_images_per_s": 5120.0,
    "features": "classifier",
    "n": 2000,
    "data": "fashion-mnist",
    "fd_floor": 1.25,
}
VQ_EVAL = {
    "fd": 45.6,
    "kid": 0.0456,
    "kid_std": 0.002,
    "precision": 0.64,
    "recall": 0.58,
    "density": 0.71,
    "coverage": 0.69,
    "is": 7.5,
    "class_kl": 0.12,
    "classes_covered": 9.0,
    "num_classes": 10.0,
    "collapsed": 0.0,
    "sample_images_per_s": 310.0,
    "features": "classifier",
    "n": 2000,
    "data": "fashion-mnist",
    "fd_floor": 1.25,
    "mse": 0.004,
    "psnr": 24.5,
    "ssim": 0.88,
}


def make_run(root: Path, name: str, kind: str, evaluation: dict | None, elapsed: float = 600.0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    if kind == "gan":
        config = {
            "data": {"source": "fashion-mnist"},
            "model": {"z_dim": 8},
            "optim": {"lr_g": 2e-4},
            "train": {"seed": 0},
        }
        tensors = {
            "model.G.net.0.weight": torch.zeros(4, 3),
            "model.G.net.0.bias": torch.zeros(4),
            "model.D.net.0.weight": torch.zeros(2, 5),
            "model.G_ema.net.0.weight": torch.zeros(4, 3),
            "model.G_ema.net.0.bias": torch.zeros(4),
            "optim.G.state.0.exp_avg": torch.zeros(4, 3),
            "rng.torch": torch.zeros(16, dtype=torch.uint8),
        }
        log = {"d_loss": 1.2, "g_loss": 0.7}
    else:
        config = {"data": {"source": "fashion-mnist"}, "model": {}, "discriminator": {}, "optim": {}, "train": {}}
        tensors = {
            "model.vqvae.enc.weight": torch.zeros(6, 5),
            "model.vqvae.codebook": torch.zeros(8, 4),
            "optim.vqvae.state.0.exp_avg": torch.zeros(6, 5),
        }
        log = {"loss": 0.3, "recon": 0.2, "codebook_usage": 0.9, "codebook_perplexity": 7.1, "dead_codes": 1}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt.save(run, 300, kind, config, tensors, {"elapsed": elapsed})
    records = [
        {"step": s, "time": s * 2.0, "images_per_s": speed, **{k: v / s * 100 for k, v in log.items()}}
        for s, speed in ((100, 1000.0), (200, 2000.0), (300, 3000.0))
    ]
    records.insert(2, {"step": 200, "time": 400.0, "eval": {"fd": 80.0}})
    lines = [json.dumps(r) for r in records] + ["{not json"]
    if evaluation is not None:
        lines.append(json.dumps({"step": 300, "evaluation": {**evaluation, "fd": 999.0}}))  # superseded by the next
        lines.append(json.dumps({"step": 300, "evaluation": evaluation}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    pictures = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    save_grid(pictures, run / "samples" / "final.png")
    return run


@pytest.fixture
def runs(tmp_path):
    return [
        report.collect(make_run(tmp_path, "gan", "gan", GAN_EVAL)),
        report.collect(make_run(tmp_path, "vq", "vqvae", VQ_EVAL, 1200.0)),
    ]


def rows_by_key(runs):
    return {row["key"]: row for row in report.metric_table(runs)}


def test_collect_reads_the_run(runs):
    gan, vq = runs
    assert (gan.kind, gan.step, gan.wall_seconds) == ("gan", 300, 600.0)
    assert gan.evaluation["fd"] == 12.3  # the latest evaluation record wins
    assert gan.train_images_per_s == pytest.approx(2000.0)  # mean of the logs' images_per_s
    assert any("unreadable line" in p for p in gan.problems)
    assert vq.kind == "vqvae" and vq.samples.name == "final.png"


def test_parameter_count_excludes_ema_optimizer_and_rng(runs):
    gan, vq = runs
    assert gan.parameters == {"G": 4 * 3 + 4, "D": 2 * 5}
    assert gan.total_parameters == 26
    assert vq.parameters == {"vqvae": 30 + 32}


def test_prior_counts_prior_and_vqvae(tmp_path):
    run = tmp_path / "prior"
    config = {
        "vqvae": "runs/vq",
        "kind": "transformer",
        "conditional": False,
        "maskgit_steps": 8,
        "model": {},
        "optim": {},
        "train": {},
    }
    ckpt.save(
        run,
        5,
        "prior",
        config,
        {"model.prior.w": torch.zeros(3, 3), "model.vqvae.w": torch.zeros(2)},
        {"elapsed": 30.0},
    )
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "eval": {"code_nll": 2.0, "code_bits_per_dim": 0.71}}) + "\n"
    )
    summary = report.collect(run)  # no config.yaml: the checkpoint alone makes it a run
    assert summary.kind == "prior" and summary.parameters == {"prior": 9, "vqvae": 2}
    assert rows_by_key([summary])["code_bits_per_dim"]["values"] == [0.71]


def test_table_numbers_match_metrics_files(runs, tmp_path):
    rows = rows_by_key(runs)
    for key in (
        "fd",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "is",
        "class_kl",
        "sample_images_per_s",
        "fd_floor",
    ):
        assert rows[key]["values"] == [GAN_EVAL[key], VQ_EVAL[key]], key
    assert rows["psnr"]["values"] == [None, 24.5] and rows["psnr"]["display"][0] == "—"
    assert rows["class_coverage"]["display"] == ["10/10", "9/10"]
    assert rows["wall_minutes"]["values"] == [10.0, 20.0]
    page = report.write_report(runs, tmp_path / "report.html").read_text()
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    for number in ("12.3", "45.6", "0.82", "0.64", "8.25", "24.5", "1.25", "10/10", "9/10", "0.0123 ± 0.0011"):
        assert number in cells, number
    assert "999" not in cells  # the superseded evaluation


def test_leaders_follow_direction(runs):
    rows = rows_by_key(runs)
    assert rows["fd"]["leader"] == "gan"  # lower is better
    assert rows["class_kl"]["leader"] == "gan"
    assert rows["recall"]["leader"] == "vq"  # higher is better
    assert rows["precision"]["leader"] == "gan"
    assert rows["wall_minutes"]["leader"] == "gan"
    assert rows["fd_floor"]["leader"] is None  # a reference, not a score
    assert rows["psnr"]["leader"] is None  # only one run has it
    said = report.verdicts(runs)
    assert "Frechet distance (n=2,000): gan leads (12.3 vs 45.6, 3.7x lower)" in said
    assert any(v.startswith("recall: vq leads (0.58 vs 0.41") for v in said)


def test_leader_cell_is_highlighted(runs, tmp_path):
    page = report.write_report(runs, tmp_path / "r.html").read_text()
    fd_row = next(r for r in page.split("<tr>") if "Frechet distance" in r)
    assert '<td class="lead">12.3</td>' in fd_row and '<td class="">45.6</td>' in fd_row


def test_every_frechet_distance_and_kid_carries_its_sample_count(tmp_path):
    """Shared by the runs: in the row's name (FID when every run used Inception); else per cell."""
    inception = {**GAN_EVAL, "features": "inception", "n": 1000}
    same = [report.collect(make_run(tmp_path / "a", name, "gan", inception)) for name in ("one", "two")]
    rows = rows_by_key(same)
    assert rows["fd"]["metric"] == "FID (n=1,000)" and rows["kid"]["metric"] == "KID (n=1,000)"
    assert rows["fd"]["display"] == ["12.3", "12.3"]
    page = report.write_report(same, tmp_path / "same.html").read_text()
    assert "FID (n=1,000)" in page

    mixed = [
        report.collect(make_run(tmp_path / "b", "gan", "gan", inception)),
        report.collect(make_run(tmp_path / "b", "vq", "vqvae", VQ_EVAL)),  # classifier features, n=2000
    ]
    rows = rows_by_key(mixed)
    assert rows["fd"]["metric"] == "Frechet distance"  # not FID: one run used the classifier
    assert rows["fd"]["display"] == ["12.3 (n=1,000)", "45.6 (n=2,000)"]
    assert rows["kid"]["display"] == ["0.0123 ± 0.0011 (n=1,000)", "0.0456 ± 0.002 (n=2,000)"]
    assert any("different sample counts" in note for note in report.notes(mixed))

    # a run without the score (a VQ-VAE's evaluation has no fd) does not split the count
    unscored = {k: v for k, v in VQ_EVAL.items() if k not in ("fd", "kid")} | {"n": 64}
    beside = [
        report.collect(make_run(tmp_path / "c", "gan", "gan", inception)),
        report.collect(make_run(tmp_path / "c", "vq", "vqvae", unscored)),
    ]
    rows = rows_by_key(beside)
    assert rows["fd"]["metric"] == "FID (n=1,000)" and rows["fd"]["display"] == ["12.3", "—"]


def test_images_embedded_and_self_contained(runs, tmp_path):
    page = report.write_report(runs, tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # two grids and two curve plots
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "<script" not in page
    assert "originals and reconstructions" in page


def test_missing_evaluation_shows_dash_and_note(tmp_path):
    runs = [
        report.collect(make_run(tmp_path, "gan", "gan", GAN_EVAL)),
        report.collect(make_run(tmp_path, "new", "gan", None)),
    ]
    rows = rows_by_key(runs)
    assert rows["fd"]["values"] == [12.3, None] and rows["fd"]["display"][1] == "—"
    assert rows["fd"]["leader"] is None  # nobody leads alone
    page = report.write_report(runs, tmp_path / "r.html").read_text()
    assert '<td class="na">—</td>' in page
    assert "genforge evaluate" in page and "for scores" in page


def test_not_a_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenforgeError, match="not a genforge run folder"):
        report.collect(tmp_path / "empty")
    with pytest.raises(GenforgeError, match="no such run"):
        report.collect(tmp_path / "absent")


def test_written_atomically(runs, tmp_path):
    out = tmp_path / "deep" / "report.html"
    assert report.write_report(runs, out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_data_filter_picks_matching_evaluation(tmp_path):
    run = make_run(tmp_path, "gan", "gan", GAN_EVAL)
    assert report.collect(run, data="fashion-mnist").evaluation["fd"] == 12.3
    assert report.collect(run, data="cifar10").evaluation is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
def test_screenshot_renders(runs, tmp_path):
    page = report.write_report(runs, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "screenshot_report.py"), str(page), str(shot), "--size", "900,900"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert shot.stat().st_size > 1000


def test_single_run_report_has_no_leaders(tmp_path):
    run = make_run(tmp_path, "vq", "vqvae", VQ_EVAL)
    save_grid(np.zeros((2, 8, 8, 1), np.uint8), run / "recon.png")
    summary = report.collect(run)
    assert all(row["leader"] is None for row in report.metric_table([summary]))
    assert report.verdicts([summary]) == []
    page = report.write_report([summary], tmp_path / "r.html").read_text()
    assert "reconstructions (recon.png)" in page and page.count("data:image/png;base64,") == 3
