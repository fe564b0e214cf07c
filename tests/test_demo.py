"""`genforge demo`: a very short budget on Fashion-MNIST ends in one report of the three runs, and bad
input is refused before any training."""

from __future__ import annotations

import pytest

from genforge import families
from genforge.commands.demo import run_demo
from genforge.config import merge, nest, parse_set
from genforge.errors import GenforgeError
from synthetic import TINY_GAN, TINY_PRIOR, TINY_VQVAE, cli, install_evaluator, one_error

LIMIT = 2000  # images per split the demo's runs train on (the evaluation still uses 10,000 real ones)


def test_demo_minutes_must_be_positive(tmp_path):
    code, _, err = cli("demo", "--minutes", 0, "--out", tmp_path / "demo")
    assert code == 2 and one_error(err) == "genforge: error: --minutes must be positive, got 0.0"
    assert not (tmp_path / "demo").exists()


def test_demo_on_missing_data_fails_before_training(tmp_path):
    with pytest.raises(GenforgeError, match="no such file or folder"):
        run_demo(tmp_path / "demo", minutes=0.3, data=str(tmp_path / "nothing.npz"), n_eval=64, progress=False)
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
    for name, tiny in (("vqvae", TINY_VQVAE), ("prior", TINY_PRIOR)):
        presets = families.get(name).presets
        monkeypatch.setitem(presets, "default", _shrunk(presets, tiny + ["train.batch_size=16"])["default"])
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
    assert "code_bits_per_dim" in prior and {"psnr", "codebook_usage"} <= set(vqvae)
    summary = capsys.readouterr().err
    for name, s in (("gan", gan), ("prior", prior)):
        assert (
            f"{name:>6}: Frechet distance {s['fd']:.3f} (floor {s['fd_floor']:.3f}), recall {s['recall']:.3f}"
            in summary
        )
    assert f" vqvae: test PSNR {vqvae['psnr']:.2f} dB, codebook usage {vqvae['codebook_usage']:.1%}" in summary
    assert f"report: {result.report}" in summary
