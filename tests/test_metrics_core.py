"""Closed-form and invariant tests of the pure metric cores."""

import math

import numpy as np
import pytest
import torch

from genforge.errors import GenforgeError
from genforge.metrics import core
from genforge.metrics.evaluate import collapse_warning


def gaussian(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --- Frechet distance -------------------------------------------------------------------------


def test_frechet_equal_covariance_is_squared_mean_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    sigma = a @ a.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = float(((mu1 - mu2) ** 2).sum())
    assert core.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_frechet_of_scaled_identity_covariances():
    # tr(aI + bI - 2 sqrt(ab) I) = D (sqrt(a) - sqrt(b))^2
    d = 5
    value = core.frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), 9 * np.eye(d))
    assert value == pytest.approx(d * (2 - 3) ** 2)


def test_frechet_identical_sets_is_zero():
    feats = gaussian(300, 32, 1)
    mu, sigma = core.feature_stats(feats)
    assert core.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, s1 = core.feature_stats(gaussian(400, 64, 2))
    mu2, s2 = core.feature_stats(gaussian(300, 64, 3, shift=0.3) * 1.5)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert core.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-6)


def test_frechet_singular_covariance_is_finite():
    # Fewer samples than dimensions: rank-deficient covariances must not give NaN.
    mu1, s1 = core.feature_stats(gaussian(10, 40, 4))
    mu2, s2 = core.feature_stats(gaussian(10, 40, 5))
    assert np.isfinite(core.frechet_distance(mu1, s1, mu2, s2))


def test_frechet_shape_mismatch_errors():
    with pytest.raises(GenforgeError):
        core.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID --------------------------------------------------------------------------------------


def test_kid_unbiased_on_same_distribution():
    # Unbiased over fresh draws: the average over many pairs of sets is ~0 and some are negative.
    values = np.array(
        [core.kid(gaussian(40, 4, 2 * s), gaussian(40, 4, 2 * s + 1), subsets=1, subset_size=40)[0] for s in range(60)]
    )
    assert values.min() < 0 < values.max()
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
    shifted = core.kid(gaussian(40, 4, 0), gaussian(40, 4, 1, shift=1.0), subsets=1, subset_size=40)[0]
    assert shifted > values.mean() + 5 * values.std()


def test_kid_clips_subset_size_to_the_smaller_set():
    a, b = gaussian(50, 8, 9), gaussian(30, 8, 10)
    assert core.kid(a, b, subsets=4, subset_size=1000, seed=3) == core.kid(a, b, subsets=4, subset_size=30, seed=3)


def test_kid_matches_direct_formula():
    x, y = gaussian(20, 4, 11), gaussian(20, 4, 12)  # subset_size = all, so no sampling noise
    kernel = lambda p, q: (p @ q.T / 4 + 1) ** 3
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m = 20
    expected = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )
    mean, std = core.kid(y, x, subsets=3, subset_size=20)
    assert mean == pytest.approx(expected, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


# --- precision / recall / density / coverage --------------------------------------------------


def test_knn_radii_brute_force():
    feats = gaussian(50, 3, 13)
    d = np.sqrt(((feats[:, None] - feats[None]) ** 2).sum(-1))
    expected = np.sort(d, axis=1)[:, 3]
    np.testing.assert_allclose(core.knn_radii(feats, 3), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(core.knn_radii(feats, [3, 5])[1], np.sort(d, axis=1)[:, 5], rtol=1e-9, atol=1e-9)


def test_precision_recall_of_set_against_itself_is_one():
    feats = gaussian(300, 8, 14)
    assert core.precision_recall(feats, feats, k=3) == (1.0, 1.0)


def test_precision_recall_same_distribution_high_and_disjoint_zero():
    real = gaussian(500, 4, 15)
    precision, recall = core.precision_recall(real, gaussian(500, 4, 16), k=3)
    assert precision > 0.85 and recall > 0.85
    assert core.precision_recall(real, gaussian(500, 4, 17, shift=100.0)) == (0.0, 0.0)


def test_precision_without_recall_for_a_collapsed_set():
    real = gaussian(500, 4, 18)
    fake = real[0] + 1e-3 * gaussian(200, 4, 26)  # all on one data point: precise, no recall
    precision, recall = core.precision_recall(real, fake, k=3)
    assert precision == 1.0 and recall < 0.1


def test_density_coverage_against_itself_and_same_distribution():
    feats = gaussian(300, 8, 19)
    density, coverage = core.density_coverage(feats, feats, k=5)
    # Each point lies in its own ball and in the balls of the k points it is a neighbour of.
    assert density == pytest.approx(6 / 5) and coverage == 1.0
    density, coverage = core.density_coverage(gaussian(600, 4, 20), gaussian(600, 4, 21), k=5)
    assert 0.8 < density < 1.2 and coverage > 0.9


def test_chunked_manifold_matches_unchunked(monkeypatch):
    real, fake = gaussian(100, 4, 22), gaussian(80, 4, 23, shift=0.5)
    full = core.precision_recall(real, fake), core.density_coverage(real, fake)
    monkeypatch.setattr(core, "_CHUNK", 7)
    assert (core.precision_recall(real, fake), core.density_coverage(real, fake)) == full


# --- class-based scores -----------------------------------------------------------------------


def test_inception_score_bounds():
    k = 10
    confident_uniform = np.eye(k)[np.arange(1000) % k]
    assert core.inception_score(confident_uniform, splits=10) == pytest.approx((k, 0.0))
    uninformative = np.full((1000, k), 1.0 / k)
    assert core.inception_score(uninformative)[0] == pytest.approx(1.0)


def test_class_histogram_and_kl():
    hist = core.class_histogram(np.array([0, 0, 1, 3]), 4)
    np.testing.assert_allclose(hist, [0.5, 0.25, 0.0, 0.25])
    uniform = np.full(10, 0.1)
    assert core.class_kl(uniform, uniform) == pytest.approx(0.0, abs=1e-12)
    one_class = np.eye(10)[3]
    assert core.class_kl(one_class, uniform) == pytest.approx(math.log(10), rel=1e-4)
    with pytest.raises(GenforgeError):
        core.class_histogram(np.array([0, 5]), 4)


def test_one_class_set_is_collapsed_and_balanced_is_not():
    real_hist = np.full(10, 0.1)
    one_class = core.class_histogram(np.full(1000, 7), 10)
    balanced = core.class_histogram(np.arange(1000) % 10, 10)
    assert core.classes_covered(one_class, 0.1, real_hist) == 1
    assert core.classes_covered(balanced, 0.1, real_hist) == 10
    assert core.is_collapsed(one_class, real_hist) and core.collapse_signal(one_class, real_hist) == pytest.approx(0.9)
    assert not core.is_collapsed(balanced, real_hist) and core.collapse_signal(balanced, real_hist) == 0.0


def test_collapse_warning_on_sharp_fall():
    history = [{"classes_covered": 10.0, "recall": 0.6}, {"classes_covered": 9.0, "recall": 0.5}]
    assert collapse_warning(history, {"classes_covered": 9.0, "recall": 0.55}) is None
    message = collapse_warning(history, {"classes_covered": 3.0, "recall": 0.1})
    assert "classes covered fell from 10 to 3" in message and "recall" in message
    assert collapse_warning([], {"classes_covered": 1.0, "recall": 0.0}) is None


# --- reconstruction ---------------------------------------------------------------------------


def test_psnr_of_known_mse():
    a = np.zeros((2, 8, 8, 1), np.float64)
    b = a + 0.1  # MSE = 0.01 -> 20 dB
    assert core.mse(a, b) == pytest.approx(0.01)
    assert core.psnr(a, b) == pytest.approx(20.0)
    u8 = np.zeros((1, 8, 8, 3), np.uint8)
    assert core.psnr(u8, u8 + 51) == pytest.approx(-10 * math.log10(0.04))
    assert core.psnr(u8, u8) == pytest.approx(100.0)  # capped, finite


def test_psnr_is_per_image_then_mean():
    a = np.zeros((2, 4, 4, 1))
    b = np.stack([np.full((4, 4, 1), 0.1), np.full((4, 4, 1), 0.01)])
    assert core.psnr(a, b) == pytest.approx((20.0 + 40.0) / 2)


def test_ssim_identity_and_noise():
    rng = np.random.default_rng(24)
    x = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    assert core.ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    assert core.ssim(x, noisy) < 0.99
    very_noisy = rng.integers(0, 256, x.shape, dtype=np.uint8)
    assert core.ssim(x, very_noisy) < core.ssim(x, noisy)


def test_ssim_torch_and_numpy_agree_and_small_images_work():
    rng = np.random.default_rng(25)
    a = rng.random((2, 16, 16, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    from_numpy = core.ssim(a, b)
    from_torch = core.ssim(torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2))
    assert from_numpy == pytest.approx(from_torch)
    assert core.ssim(a[:, :6, :6], a[:, :6, :6]) == pytest.approx(1.0)
    with pytest.raises(GenforgeError):
        core.ssim(a, b[:, :8])


# --- codebooks and likelihood -----------------------------------------------------------------


def test_codebook_usage_and_perplexity():
    counts = np.array([10, 10, 10, 10, 0, 0, 0, 0])
    assert core.codebook_usage(counts) == 0.5
    assert core.perplexity(counts) == pytest.approx(4.0)
    assert core.perplexity(np.array([5, 0, 0])) == pytest.approx(1.0)


def code_bits_per_dim_formula():
    # 49 codes at 2 nats each for a 28x28 grey image.
    assert core.bits_per_dim(2.0, 49, 28 * 28, 1) == pytest.approx(2.0 * 49 / (math.log(2) * 784))
    # A code carrying exactly 8 bits per 8x8x1 patch -> 1/8 bit per dim.
    assert core.bits_per_dim(8 * math.log(2), 16, 32 * 32, 1) == pytest.approx(16 * 8 / 1024)


def test_nearest_neighbour_ratio_in_closed_form():
    real = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])  # nearest other real: 2, 2, 4 -> mean 8/3
    assert core.nearest_neighbour_ratio(real, real[[0, 2]]) == 0.0  # copies of training images
    fake = np.array([[1.0, 0.0], [0.0, 5.0]])  # nearest real: 1 and 1 -> mean 1
    assert core.nearest_neighbour_ratio(real, fake) == pytest.approx(1 / (8 / 3))
    far = real + 100.0
    assert core.nearest_neighbour_ratio(real, far) > 10
