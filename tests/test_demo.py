"""`genforge demo`: a very short budget on Fashion-MNIST ends in one report of the three runs, and bad
input is refused before any training."""

from __future__ import annotations

import pytest

from genforge import demo
from genforge.config import merge, nest, parse_set
from genforge.demo import run_demo
from genforge.errors import GenforgeError
from synthetic import TINY_GAN, TINY_PRIOR, TINY_VQVAE, cli, install_evaluator, one_error, write_npz

LIMIT = 2000  # images per split the demo's runs train on (the evaluation still uses 10,000 real ones)


def test_demo_minutes_must_be_positive(tmp_path):
    code, _, err = cli("demo", "--minutes", 0, "--out", tmp_path / "demo")
    assert code == 2 and one_error(err) == "genforge: error: --minutes must be positive, got 0.0"
    assert not (tmp_path / "demo").exists()


def test_demo_on_data_without_a_test_split_fails_before_training(tmp_path):
    """The floor (real vs real) and the VQ-VAE's scores need held-out images; an .npz has none."""
    data = write_npz(tmp_path / "bars.npz", n=64)
    with pytest.raises(GenforgeError, match="has no test split"):
        run_demo(tmp_path / "demo", minutes=0.3, data=str(data), n_eval=64, device_name="cpu", progress=False)
    assert not (tmp_path / "demo").exists()


def _shrunk(presets: dict, tiny: list[str]) -> dict:
    """The presets with ``default`` made tiny."""
    values = presets["default"]
    for assignment in tiny:
        values = merge(values, nest(*parse_set(assignment)))
    return {**presets, "default": values}


def test_short_demo_on_fashion_mnist(fashion_available, tmp_path, monkeypatch, capsys):
    """The whole demo on the real data with tiny models on the first LIMIT images of each split:
    encoding all 70,000 images with the default VQ-VAE alone takes over half a minute on one core."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    install_evaluator(cache, "fashion-mnist", limit=500)
    monkeypatch.setattr(demo, "VQVAE_PRESETS", _shrunk(demo.VQVAE_PRESETS, TINY_VQVAE + ["train.batch_size=16"]))
    monkeypatch.setattr(demo, "PRIOR_PRESETS", _shrunk(demo.PRIOR_PRESETS, TINY_PRIOR + ["train.batch_size=16"]))
    result = run_demo(
        tmp_path / "demo",
        minutes=0.2,
        data="fashion-mnist",
        n_eval=200,
        device_name="cpu",
        progress=False,
        sets=TINY_GAN + ["train.batch_size=16"],
        limit=LIMIT,
    )

    assert result.report == tmp_path / "demo" / "report.html"
    page = result.report.read_text()
    for name in ("gan", "prior", "vqvae"):
        assert f"{name} ({name})" in page  # each run folder is named after its kind
        assert (tmp_path / "demo" / name / "checkpoints").is_dir()
    assert page.count("data:image/png;base64,") >= 3

    gan, prior, vqvae = (result.scores[k] for k in ("gan", "prior", "vqvae"))
    assert gan["fd_floor"] == prior["fd_floor"] == vqvae["fd_floor"] >= 0
    assert gan["n"] == prior["n"] == 200
    assert "test_bits_per_dim" in prior and {"psnr", "codebook_usage"} <= set(vqvae)
    summary = capsys.readouterr().err
    for name, s in (("gan", gan), ("prior", prior)):
        assert (
            f"{name:>6}: Frechet distance {s['fd']:.3f} (floor {s['fd_floor']:.3f}), recall {s['recall']:.3f}"
            in summary
        )
    assert f" vqvae: test PSNR {vqvae['psnr']:.2f} dB, codebook usage {vqvae['codebook_usage']:.1%}" in summary
    assert f"report: {result.report}" in summary
