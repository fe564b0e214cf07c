"""Orchestration: uint8 images in, a flat dict of named numbers out.

A feature extractor (``classifier`` or ``inception``) turns images into features and, where it
can, class probabilities; the pure cores in ``core.py`` turn those into metrics. The real
side is computed once (``reference_stats``) and cached as .npz so each evaluation during
training only pays for the samples.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from genforge.errors import GenforgeError
from genforge.metrics import core
from genforge.metrics.table import computed
from genforge.progress import SILENT, Reporter
from genforge.runfolder import atomic_path

PR_K = 3  # neighbours for precision/recall (Kynkaanniemi et al.)
DC_K = 5  # neighbours for density/coverage (Naeem et al.)
CACHE_VERSION = 1


@runtime_checkable
class FeatureExtractor(Protocol):
    """What evaluate needs from a feature network. It may also offer

    ``class_probs(images) -> (N, K)`` probabilities (enables IS and the class metrics),
    ``features_and_probs(images)`` returning both from one forward pass, and ``batch_size``.
    """

    name: str

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float64 (N, D)."""
        ...


def extract(
    images: np.ndarray,
    extractor: FeatureExtractor,
    *,
    batch_size: int | None = None,
    reporter: Reporter = SILENT,
    desc: str = "features",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the extractor over ``images`` in batches: features (N, D) and class probs (N, K) or None.

    ``batch_size`` defaults to the extractor's own ``batch_size`` attribute (Inception at 299x299
    needs far smaller batches than the classifier), else 256.
    """
    batch_size = batch_size or getattr(extractor, "batch_size", 256)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3):
        raise GenforgeError(f"expected uint8 images (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise GenforgeError("no images to evaluate")
    both = getattr(extractor, "features_and_probs", None)
    probs_fn = getattr(extractor, "class_probs", None)
    feats, probs = [], []
    for start in reporter.track(range(0, len(images), batch_size), desc=f"{desc} ({extractor.name})", unit="batch"):
        batch = images[start : start + batch_size]
        if both is not None:
            f, p = both(batch)
        else:
            f, p = extractor.features(batch), (probs_fn(batch) if probs_fn is not None else None)
        feats.append(np.asarray(f, np.float64))
        if p is not None:
            probs.append(np.asarray(p, np.float64))
    return np.concatenate(feats), (np.concatenate(probs) if probs else None)


# ---------------------------------------------------------------------------------------------
# Reference (real-data) statistics


@dataclass
class Reference:
    """Everything about the real set that evaluations compare against."""

    extractor: str
    features: np.ndarray  # (N, D)
    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    radii_pr: np.ndarray  # (N,) distance to the PR_K-th neighbour
    radii_dc: np.ndarray  # (N,) distance to the DC_K-th neighbour
    class_hist: np.ndarray | None  # (K,) class fractions, or None without class information
    key: str  # fingerprint of the images, labels and extractor the stats came from


def _fingerprint(images: np.ndarray, labels: np.ndarray | None, extractor_name: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}:{extractor_name}:{images.shape}:{PR_K}:{DC_K}".encode())
    digest.update(np.ascontiguousarray(images).data)
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def _save_npz(path: Path, ref: Reference) -> None:
    arrays = dict(
        extractor=np.array(ref.extractor),
        key=np.array(ref.key),
        features=ref.features,
        mu=ref.mu,
        sigma=ref.sigma,
        radii_pr=ref.radii_pr,
        radii_dc=ref.radii_dc,
        class_hist=ref.class_hist if ref.class_hist is not None else np.zeros(0),
    )
    # Written through a file object, so np.savez takes the temporary name as it is (given a name
    # it would append ".npz").
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_npz(path: Path) -> Reference | None:
    """The cached reference, or None when the file is unreadable or from an older layout."""
    try:
        with np.load(path, allow_pickle=False) as data:
            hist = data["class_hist"]
            return Reference(
                extractor=str(data["extractor"]),
                key=str(data["key"]),
                features=data["features"],
                mu=data["mu"],
                sigma=data["sigma"],
                radii_pr=data["radii_pr"],
                radii_dc=data["radii_dc"],
                class_hist=hist if hist.size else None,
            )
    except (OSError, KeyError, ValueError):
        return None


def reference_stats(
    real_images: np.ndarray,
    real_labels: np.ndarray | None,
    extractor: FeatureExtractor,
    cache_path: str | os.PathLike | None = None,
    *,
    batch_size: int | None = None,
    reporter: Reporter = SILENT,
) -> Reference:
    """Features, mean, covariance, k-NN radii and class histogram of the real images.

    With ``cache_path`` (.npz) the result is reused while images, labels and extractor are
    unchanged, and recomputed otherwise. The class histogram counts the extractor's predicted
    classes when it has them, so real and fake pass through the same classifier and its
    errors cancel; otherwise it counts ``real_labels``; otherwise it is None.
    """
    if real_labels is not None and len(real_labels) != len(real_images):
        raise GenforgeError(f"{len(real_images)} real images but {len(real_labels)} labels")
    key = _fingerprint(real_images, real_labels, extractor.name)
    if cache_path is not None and Path(cache_path).is_file():
        cached = _load_npz(Path(cache_path))
        if cached is not None and cached.key == key:
            return cached
    if len(real_images) <= DC_K:
        raise GenforgeError(f"reference statistics need more than {DC_K} real images, got {len(real_images)}")
    feats, probs = extract(real_images, extractor, batch_size=batch_size, reporter=reporter, desc="real features")
    mu, sigma = core.feature_stats(feats)
    radii = core.knn_radii(feats, [PR_K, DC_K])  # (2, N)
    if probs is not None:
        hist = core.class_histogram(probs.argmax(axis=1), probs.shape[1])
    elif real_labels is not None:
        labels = np.asarray(real_labels, np.int64)
        hist = core.class_histogram(labels, int(labels.max()) + 1)
    else:
        hist = None
    ref = Reference(extractor.name, feats, mu, sigma, radii[0], radii[1], hist, key)
    if cache_path is not None:
        _save_npz(Path(cache_path), ref)
    return ref


# ---------------------------------------------------------------------------------------------
# Evaluations


def evaluate_features(
    fake_feats: np.ndarray,
    fake_probs: np.ndarray | None,
    reference: Reference,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    min_class_fraction: float = 0.1,
    seed: int = 0,
    images: np.ndarray | None = None,
) -> dict[str, float]:
    """The metrics of ``evaluate_samples`` from already extracted features (N, D) and probs (N, K),
    then those of the registered metrics that have a ``compute`` (given the sample ``images`` too,
    uint8 (N, H, W, C), where the caller has them)."""
    if fake_feats.shape[1:] != reference.features.shape[1:]:
        raise GenforgeError(
            f"sample features {fake_feats.shape[1:]} do not match the reference {reference.features.shape[1:]}"
        )
    if len(fake_feats) <= PR_K:
        raise GenforgeError(f"evaluation needs more than {PR_K} samples, got {len(fake_feats)}")
    mu, sigma = core.feature_stats(fake_feats)
    kid_mean, kid_std = core.kid(reference.features, fake_feats, kid_subsets, kid_subset_size, seed)
    precision, recall = core.precision_recall(reference.features, fake_feats, PR_K, real_radii=reference.radii_pr)
    density, coverage = core.density_coverage(reference.features, fake_feats, DC_K, real_radii=reference.radii_dc)
    result = {
        "fd": core.frechet_distance(reference.mu, reference.sigma, mu, sigma),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
    }
    if fake_probs is not None:
        splits = min(is_splits, len(fake_probs))
        result["is"], result["is_std"] = core.inception_score(fake_probs, splits)
        num_classes = fake_probs.shape[1]
        fake_hist = core.class_histogram(fake_probs.argmax(axis=1), num_classes)
        real_hist = reference.class_hist
        if real_hist is None or len(real_hist) != num_classes:
            real_hist = np.full(num_classes, 1.0 / num_classes)
        result["class_kl"] = core.class_kl(fake_hist, real_hist)
        result["classes_covered"] = float(core.classes_covered(fake_hist, min_class_fraction, real_hist))
        result["num_classes"] = float((real_hist > 0).sum())
        result["collapsed"] = float(core.is_collapsed(fake_hist, real_hist, min_class_fraction))
    for metric in computed():
        value = metric.compute(fake_feats, fake_probs, reference, images)
        if value is not None:
            result[metric.name] = float(value)
    return result


def evaluate_samples(
    fake_images: np.ndarray,
    reference: Reference,
    extractor: FeatureExtractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int | None = None,
    seed: int = 0,
    reporter: Reporter = SILENT,
) -> dict[str, float]:
    """Score uint8 samples (N, H, W, C) against the reference.

    Keys: fd, kid, kid_std, precision, recall, density, coverage; with class probabilities
    also is, is_std, class_kl, classes_covered, num_classes, collapsed (0 or 1); then the
    registered metrics that compute their own (``metrics.table``).
    """
    if extractor.name != reference.extractor:
        raise GenforgeError(
            f"the reference statistics were made with the {reference.extractor} extractor, not {extractor.name}"
        )
    feats, probs = extract(fake_images, extractor, batch_size=batch_size, reporter=reporter, desc="sample features")
    return evaluate_features(
        feats, probs, reference, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, images=fake_images
    )


def real_vs_real(
    train_images: np.ndarray,
    test_images: np.ndarray,
    extractor: FeatureExtractor,
    *,
    train_labels: np.ndarray | None = None,
    cache_path: str | os.PathLike | None = None,
    **options,
) -> dict[str, float]:
    """The floor: held-out real images scored as if they were samples. No model can beat it by much."""
    reference = reference_stats(
        train_images, train_labels, extractor, cache_path, reporter=options.get("reporter", SILENT)
    )
    return evaluate_samples(test_images, reference, extractor, **options)


def reconstruction_metrics(originals: np.ndarray, reconstructions: np.ndarray) -> dict[str, float]:
    """uint8 (N, H, W, C) pairs -> mse (on [0, 1]), psnr (dB), ssim."""
    return {
        "mse": core.mse(originals, reconstructions),
        "psnr": core.psnr(originals, reconstructions),
        "ssim": core.ssim(originals, reconstructions),
    }


# ---------------------------------------------------------------------------------------------
# Training-time watch


def collapse_warning(
    history: list[dict], current: dict, *, class_drop: int = 2, recall_ratio: float = 0.5, min_best_recall: float = 0.1
) -> str | None:
    """A one-line warning when the current evaluation looks like mode collapse, else None.

    Compares against the best value seen so far in ``history`` (earlier evaluate results):
    classes_covered falling by ``class_drop`` or more, or recall falling below
    ``recall_ratio`` of its best. Entries without those keys are ignored.
    """
    problems = []
    best_classes = max((h["classes_covered"] for h in history if "classes_covered" in h), default=None)
    if (
        best_classes is not None
        and "classes_covered" in current
        and current["classes_covered"] <= best_classes - class_drop
    ):
        problems.append(f"classes covered fell from {best_classes:.0f} to {current['classes_covered']:.0f}")
    best_recall = max((h["recall"] for h in history if "recall" in h), default=None)
    if (
        best_recall is not None
        and best_recall >= min_best_recall
        and "recall" in current
        and current["recall"] < recall_ratio * best_recall
    ):
        problems.append(f"recall fell from {best_recall:.3f} to {current['recall']:.3f}")
    if not problems:
        return None
    return "possible mode collapse: " + " and ".join(problems) + " (against the best so far)"
