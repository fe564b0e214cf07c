"""A user's own images, start to finish with defaults: an unlabelled folder of colour images (PNG,
JPEG and WebP mixed, two sizes, one of them not square) trains every family with nothing beyond
--data, --out and a budget, then evaluate, tune, sample, compare and report run with their
defaults. Only the sample counts of evaluate and tune are made small (their defaults, 10,000 and
2,000, would take minutes), and Inception is the cheap stand-in of test_features_follow_data.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genforge import checkpoint as ckpt
from genforge.metrics import extractors
from synthetic import cli
from test_features_follow_data import SmallInception

FAMILIES = ("gan", "stylegan2", "fastgan", "vqvae")


def own_images(folder, n: int = 40):
    """Unlabelled colour images as a user might have them: three formats, 36x36 and 30x28 mixed."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        height, width = (36, 36) if i % 2 else (28, 30)
        pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo-{i:03d}.{('png', 'jpg', 'webp')[i % 3]}")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(root / "cache"))
        mp.setattr(extractors, "InceptionExtractor", SmallInception)
        photos = own_images(root / "photos")
        made = {}
        for family in FAMILIES:
            code, _, err = cli("train", family, "--data", photos, "--out", root / family, "--steps", 2)
            assert code == 0, err
            assert "budget: 2 steps" in err
            made[family] = root / family
        code, _, err = cli("train", "prior", "--vqvae", root / "vqvae", "--out", root / "prior", "--steps", 2)
        assert code == 0, err
        made["prior"] = root / "prior"
        yield root, made


@pytest.mark.parametrize("family", [*FAMILIES, "prior"])
def test_every_family_trains_on_an_unlabelled_mixed_folder(runs, family):
    _, made = runs
    c = ckpt.load(made[family])
    assert c.step == 2
    if family != "prior":
        data = c.config["data"]
        assert data["fit"] == "center-crop" and data["resolution"] > 0  # the mixed sizes fitted, not refused


@pytest.mark.parametrize("family", ["gan", "stylegan2", "fastgan", "prior"])
def test_evaluate_tune_and_sample_run_with_defaults(runs, family, monkeypatch):
    root, made = runs
    monkeypatch.setenv("GENFORGE_CACHE", str(root / "cache"))
    monkeypatch.setattr(extractors, "InceptionExtractor", SmallInception)
    run = made[family]
    code, out, err = cli("evaluate", run, "--n", 8)
    assert code == 0, err
    assert "features: inception (the data has no labels)" in err
    code, _, err = cli("tune", run, "--n", 8)
    assert code == 0, err
    code, _, err = cli("sample", run, "--out", root / f"{family}.png")
    assert code == 0, err
    assert Image.open(root / f"{family}.png").size[0] > 0


def test_compare_and_report_run_with_defaults(runs, monkeypatch):
    root, made = runs
    monkeypatch.setenv("GENFORGE_CACHE", str(root / "cache"))
    code, _, err = cli("compare", *made.values(), "--out", root / "report.html")
    assert code == 0, err
    assert (root / "report.html").read_text().count("<img") >= len(made)
    code, _, err = cli("report", made["gan"])
    assert code == 0, err
    assert (made["gan"] / "report.html").is_file()
