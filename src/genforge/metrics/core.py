"""Pure numeric cores of the metrics: arrays in, numbers out, float64 throughout.

Nothing here knows about feature networks; ``evaluate.py`` joins the two. Each function is
tested in closed form in ``tests/test_metrics_core.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from genforge.errors import GenforgeError

# ---------------------------------------------------------------------------------------------
# Frechet distance


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), both float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise GenforgeError(f"feature statistics need at least 2 samples of shape (N, D), got {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via eigh."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    # Round-off makes zero eigenvalues of rank-deficient covariances slightly negative.
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) between two Gaussians.

    tr sqrt(S1 S2) equals the sum of square roots of the eigenvalues of the symmetric PSD
    matrix sqrt(S1) S2 sqrt(S1) (it is similar to S1 S2), so two symmetric eigendecompositions
    replace scipy's sqrtm: faster, always real, and stable for singular covariances.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise GenforgeError(
            f"Frechet distance needs matching statistics, got means {mu1.shape} {mu2.shape} "
            f"and covariances {sigma1.shape} {sigma2.shape}"
        )
    sqrt_sigma1 = _sqrt_psd(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1  # (D, D), symmetric PSD up to round-off
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    # Identical statistics give -1e-13 or so from round-off; a distance is never negative.
    return float(max(distance, 0.0))


# ---------------------------------------------------------------------------------------------
# Kernel Inception Distance


def _cubic_kernel(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    """(a b^T / D + 1)^3, (len(a), len(b)); in place because ** 3 is twice as slow."""
    k = a @ b.T
    k /= dim
    k += 1.0
    cube = k * k
    cube *= k
    return cube


def kid(
    f_real: np.ndarray, f_fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel (x.y / D + 1)^3 (Binkowski et al. 2018), mean and std over subsets.

    Unbiased means it can be slightly negative when both sets come from one distribution.
    """
    f_real, f_fake = np.asarray(f_real, np.float64), np.asarray(f_fake, np.float64)
    if f_real.ndim != 2 or f_real.shape[1:] != f_fake.shape[1:]:
        raise GenforgeError(f"KID needs (N, D) features of one width, got {f_real.shape} and {f_fake.shape}")
    m = min(len(f_real), len(f_fake), subset_size)
    if m < 2:
        raise GenforgeError(f"KID needs at least 2 samples in each set, got {len(f_real)} and {len(f_fake)}")
    dim = f_real.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = f_fake[rng.choice(len(f_fake), m, replace=False)]  # (m, D)
        y = f_real[rng.choice(len(f_real), m, replace=False)]  # (m, D)
        k_xx, k_yy, k_xy = _cubic_kernel(x, x, dim), _cubic_kernel(y, y, dim), _cubic_kernel(x, y, dim)
        # Dropping the diagonals of the within-set kernels is what makes the estimate unbiased.
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values[i] = within - 2.0 * k_xy.mean()
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------------------------------------
# k-nearest-neighbour manifolds: precision/recall, density/coverage

_CHUNK = 1024  # most rows per distance block: 1024 x 10,000 float64 = 80 MB
_BLOCK_ELEMENTS = 1 << 24  # and at most 128 MB per block however many columns


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x, x)


def _distance_blocks(a: np.ndarray, b: np.ndarray):
    """Yield (start, distances (chunk, len(b))) for row blocks of ``a`` against all of ``b``.

    Radii and membership tests both use these exact values: comparing squared distances with
    squared radii would lose an ulp in sqrt-then-square and drop a point from its own ball.
    """
    b_norms = _squared_norms(b)
    rows = max(1, min(_CHUNK, _BLOCK_ELEMENTS // max(1, len(b))))
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        d2 = _squared_norms(block)[:, None] + b_norms[None, :] - 2.0 * (block @ b.T)
        yield start, np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)


def knn_radii(feats: np.ndarray, k: int | Sequence[int]) -> np.ndarray:
    """Distance from each point to its k-th nearest other point: (N,) for one k, (len(k), N) for several."""
    feats = np.asarray(feats, np.float64)
    ks = [k] if np.isscalar(k) else list(k)
    if min(ks) < 1 or max(ks) >= len(feats):
        raise GenforgeError(
            f"k-nearest-neighbour radii need 1 <= k < number of samples, got k={k} for {len(feats)} samples"
        )
    radii = np.empty((len(ks), len(feats)))
    for start, dist in _distance_blocks(feats, feats):
        # Column k of each sorted row is the k-th neighbour: column 0 is the point itself.
        part = np.partition(dist, ks, axis=1)
        radii[:, start : start + len(dist)] = part[:, ks].T
    return radii[0] if np.isscalar(k) else radii


def nearest_neighbour_ratio(real: np.ndarray, fake: np.ndarray) -> float:
    """Memorisation check: the mean distance from each sample to its nearest real image, over the
    mean distance from each real image to its nearest other real image (N, D) flattened rows.

    About 1 or more when samples are as far from the training set as its images are from each
    other; towards 0 when samples copy training images (exact copies give 0).
    """
    real, fake = _check_pair(real, fake)
    own = knn_radii(real, 1).mean()
    nearest = np.concatenate([dist.min(axis=1) for _, dist in _distance_blocks(fake, real)])
    if own == 0:
        raise GenforgeError("the real images hold duplicates of every image: their nearest-neighbour distance is 0")
    return float(nearest.mean() / own)


def _check_pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or real.shape[1:] != fake.shape[1:]:
        raise GenforgeError(f"need (N, D) features of one width, got {real.shape} and {fake.shape}")
    return real, fake


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 3,
    *,
    real_radii: np.ndarray | None = None,
    fake_radii: np.ndarray | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision: fraction of fake points inside the real manifold (union of k-NN balls of real);
    recall: fraction of real points inside the fake manifold. Radii may be passed in when the
    caller has them cached (``knn_radii``).
    """
    real, fake = _check_pair(real, fake)
    real_r = knn_radii(real, k) if real_radii is None else np.asarray(real_radii)  # (N_real,)
    fake_r = knn_radii(fake, k) if fake_radii is None else np.asarray(fake_radii)  # (N_fake,)
    fake_inside = np.zeros(len(fake), bool)
    real_inside = np.zeros(len(real), bool)
    for start, dist in _distance_blocks(real, fake):  # (chunk of real, N_fake)
        fake_inside |= (dist <= real_r[start : start + len(dist), None]).any(axis=0)
        real_inside[start : start + len(dist)] = (dist <= fake_r[None, :]).any(axis=1)
    return float(fake_inside.mean()), float(real_inside.mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, *, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020).

    density: mean number of real k-NN balls holding each fake point, divided by k (about 1 for
    matching distributions; a set against itself gives (k + 1) / k since each point also lies in
    its own ball); coverage: fraction of real balls that hold at least one fake point.
    """
    real, fake = _check_pair(real, fake)
    real_r = knn_radii(real, k) if real_radii is None else np.asarray(real_radii)  # (N_real,)
    inside_count = 0
    covered = np.zeros(len(real), bool)
    for start, dist in _distance_blocks(real, fake):  # (chunk of real, N_fake)
        inside = dist <= real_r[start : start + len(dist), None]
        inside_count += int(inside.sum())
        covered[start : start + len(dist)] = inside.any(axis=1)
    return float(inside_count / (k * len(fake))), float(covered.mean())


# ---------------------------------------------------------------------------------------------
# Class-based scores: Inception Score, class histograms, mode collapse


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over ``splits`` parts of (N, K) class probabilities: mean, std."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) < splits:
        raise GenforgeError(f"Inception Score needs (N, K) probabilities with N >= splits={splits}, got {probs.shape}")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        # xlogy-style guard: 0 * log 0 counts as 0.
        log_ratio = np.log(np.where(part > 0, part, 1.0)) - np.log(np.where(marginal > 0, marginal, 1.0))
        scores.append(np.exp((part * log_ratio).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_histogram(pred_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels (N,) -> fraction of samples per class (num_classes,), summing to 1."""
    labels = np.asarray(pred_labels).astype(np.int64).ravel()
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise GenforgeError(f"class labels must be in [0, {num_classes}), got {len(labels)} labels")
    return np.bincount(labels, minlength=num_classes) / len(labels)


def class_kl(fake_hist: np.ndarray, real_hist: np.ndarray, smoothing: float = 1e-6) -> float:
    """KL(fake || real) between class histograms in nats; 0 when the class mix matches.

    The smoothing keeps a class the data never shows from making the value infinite.
    """
    p = np.asarray(fake_hist, np.float64) + smoothing
    q = np.asarray(real_hist, np.float64) + smoothing
    p, q = p / p.sum(), q / q.sum()
    return float(max((p * np.log(p / q)).sum(), 0.0))


def classes_covered(hist: np.ndarray, min_fraction: float = 0.1, real_hist: np.ndarray | None = None) -> int:
    """Number of classes that get at least ``min_fraction`` of their expected share of samples.

    The expected share is the data's class fraction (``real_hist``), or uniform when not given;
    classes absent from the data are not counted.
    """
    hist = np.asarray(hist, np.float64)
    expected = np.full_like(hist, 1.0 / len(hist)) if real_hist is None else np.asarray(real_hist, np.float64)
    return int(((expected > 0) & (hist >= min_fraction * expected)).sum())


def collapse_signal(hist: np.ndarray, real_hist: np.ndarray | None = None, min_fraction: float = 0.1) -> float:
    """Fraction of the data's classes that the samples miss: 0 healthy, (K - 1) / K for one class."""
    expected = np.full(len(hist), 1.0 / len(hist)) if real_hist is None else np.asarray(real_hist, np.float64)
    present = int((expected > 0).sum())
    return 1.0 - classes_covered(hist, min_fraction, expected) / present


def is_collapsed(
    hist: np.ndarray, real_hist: np.ndarray | None = None, min_fraction: float = 0.1, max_missing: float = 0.5
) -> bool:
    """True when the samples miss more than ``max_missing`` of the data's classes (see collapse_signal)."""
    return collapse_signal(hist, real_hist, min_fraction) > max_missing


# ---------------------------------------------------------------------------------------------
# Reconstruction: MSE, PSNR, SSIM


def _unit_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images -> float64 tensor (N, C, H, W) in [0, 1].

    Layout follows the project convention: numpy arrays are (N, H, W, C), tensors (B, C, H, W).
    """
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor[None]
    else:
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise GenforgeError(f"expected images (N, H, W, C), got shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    if tensor.ndim != 4:
        raise GenforgeError(f"expected images (B, C, H, W), got shape {tuple(tensor.shape)}")
    scale = 255.0 if tensor.dtype == torch.uint8 else 1.0
    return tensor.to(torch.float64) / scale


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _unit_nchw(a), _unit_nchw(b)
    if x.shape != y.shape:
        raise GenforgeError(f"images to compare differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y


def _per_image_mse(a, b) -> torch.Tensor:
    x, y = _pair(a, b)
    return (x - y).pow(2).flatten(1).mean(dim=1)  # (N,)


def mse(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean squared error on the [0, 1] scale (uint8 inputs are divided by 255)."""
    return float(_per_image_mse(a, b).mean())


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (peak 1 on the [0, 1] scale), per image then mean.

    Identical images are capped at 100 dB so the result stays a finite, JSON-safe number.
    """
    per_image = _per_image_mse(a, b).clamp_min(1e-10)
    return float((10.0 * torch.log10(1.0 / per_image)).mean())


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window, K1=0.01, K2=0.03, on [0, 1].

    Computed per channel over the valid region, averaged per image, then over images. Images
    smaller than the window use the largest odd window that fits.
    """
    x, y = _pair(a, b)  # (N, C, H, W)
    n, c, h, w = x.shape
    size = min(window, h, w)
    size -= 1 - size % 2  # an odd window keeps it centred
    kernel = _gaussian_window(size, sigma)[None, None].repeat(c, 1, 1, 1)  # (C, 1, s, s)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.flatten(1).mean(dim=1).mean())


# ---------------------------------------------------------------------------------------------
# VQ codebooks and likelihoods


def codebook_usage(counts: np.ndarray) -> float:
    """Fraction of codebook entries used at least once."""
    counts = np.asarray(counts)
    return float((counts > 0).mean())


def perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of the code distribution: the effective number of codes in use."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        raise GenforgeError("perplexity needs at least one counted code")
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def bits_per_dim(nats_per_code: float, num_codes: int, pixels: int, channels: int) -> float:
    """Prior negative log-likelihood per code (nats) -> bits per image dimension.

    An image is ``num_codes`` codes and ``pixels * channels`` dimensions (pixels = H * W).
    """
    return float(nats_per_code * num_codes / (math.log(2) * pixels * channels))
