"""Metrics: pure numeric cores (``core``), feature extractors (``classifier``, ``inception``)
and the orchestration that joins them (``evaluate``).

``inception`` is not imported here: it is optional and loads a 90 MB network.
"""

from genforge.metrics.classifier import (
    Classifier,
    ClassifierConfig,
    ClassifierExtractor,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
)
from genforge.metrics.core import (
    bits_per_dim,
    class_histogram,
    class_kl,
    classes_covered,
    codebook_usage,
    collapse_signal,
    density_coverage,
    feature_stats,
    frechet_distance,
    inception_score,
    is_collapsed,
    kid,
    knn_radii,
    mse,
    perplexity,
    precision_recall,
    psnr,
    ssim,
)
from genforge.metrics.evaluate import (
    FeatureExtractor,
    Reference,
    collapse_warning,
    evaluate_features,
    evaluate_samples,
    extract,
    real_vs_real,
    reconstruction_metrics,
    reference_stats,
)

# The names --features accepts.
EXTRACTORS = ("classifier", "inception")
