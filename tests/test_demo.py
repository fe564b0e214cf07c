"""`genforge demo`: a very short budget on Fashion-MNIST ends in one report of the three runs, and bad
input is refused before any training."""

from __future__ import annotations

import pytest

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.demo import run_demo
from genforge.config import merge, nest, parse_set
from genforge.data import load_dataset
from genforge.errors import GenforgeError
from synthetic import TINY_GAN, TINY_PRIOR, TINY_VQVAE, cli, install_evaluator, one_error

# tiny batches, and a fixed precision: the precision probe would take longer than these runs
FIXED = ["train.batch_size=16", "train.precision=fp32", "train.channels_last=false"]
LIMIT = 2000  # images per split the demo's runs train on (the evaluation still uses 10,000 real ones)


def test_demo_minutes_must_be_positive(tmp_path):
    code, _, err = cli("demo", "--minutes", 0, "--out", tmp_path / "demo")
    assert code == 2 and one_error(err) == "genforge: error: --minutes must be positive, got 0.0"
    assert not (tmp_path / "demo").exists()


def test_demo_on_missing_data_fails_before_training(tmp_path):
    with pytest.raises(GenforgeError, match="no such file or folder"):
        run_demo(tmp_path / "demo", minutes=0.3, data=str(tmp_path / "nothing.npz"), n_eval=64)
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
        monkeypatch.setitem(presets, "default", _shrunk(presets, tiny + FIXED)["default"])
    result = run_demo(
        tmp_path / "demo",
        minutes=0.2,
        data="fashion-mnist",
        n_eval=200,
        device_name="cpu",
        sets=TINY_GAN + FIXED,
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


def test_short_demo_on_emoji_colour_data_without_a_test_split(tmp_path, monkeypatch, capsys):
    """The emoji demo path: colour 64x64 data, one split (the floor compares two halves, the
    VQ-VAE is scored on training images). Classifier features here to stay quick; `make demo
    DATA=emoji` uses Inception."""
    try:
        load_dataset("emoji", limit=1)
    except GenforgeError as e:
        pytest.skip(f"the emoji dataset is not installed ({e}); make data fetches it")
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    install_evaluator(cache, "emoji", limit=400)
    for name, tiny in (("vqvae", TINY_VQVAE), ("prior", TINY_PRIOR)):
        presets = families.get(name).presets
        monkeypatch.setitem(presets, "default", _shrunk(presets, tiny + FIXED)["default"])
    result = run_demo(tmp_path / "demo", minutes=0.15, data="emoji", n_eval=64, device_name="cpu",
                      sets=TINY_GAN + FIXED, limit=200, features="classifier")  # fmt: skip
    gan, vqvae = result.scores["gan"], result.scores["vqvae"]
    assert gan["n"] == 64 and vqvae["recon_split"] == "train"
    model = ckpt.load(tmp_path / "demo" / "gan").config["model"]
    assert (model["resolution"], model["channels"]) == (64, 3)
    assert result.report.is_file()
