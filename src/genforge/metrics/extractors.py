"""Feature networks by name, and the cached real-data statistics an evaluation compares against.

Caches live under ``genforge.paths.cache_root()``: the classifier of each dataset in
``evaluators/<dataset>/``, real-data statistics in ``reference/<dataset>_..._<extractor>.npz``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from genforge.config import DataConfig
from genforge.data import dataset_key, load_configured, load_dataset
from genforge.errors import GenforgeError
from genforge.metrics.classifier import ClassifierExtractor, load_or_train_classifier
from genforge.metrics.evaluate import Reference, reference_stats
from genforge.metrics.inception import InceptionExtractor
from genforge.paths import cache_root

FEATURES = ("classifier", "inception")
REAL_N = 10_000  # real images in the reference set (k-NN metrics grow with its square)


def train_evaluator(
    source: str, device: torch.device, progress: bool = True, epochs: int = 3, seed: int = 0
) -> tuple[Any, dict]:
    """The dataset's classifier (trained on its labelled train split, cached with its test accuracy).

    ``seed`` > 0 gives another classifier of the same kind, trained from another initialisation
    and batch order and cached beside the evaluator (``<key>-seed<N>``): the VQ-VAE's perceptual
    loss uses one, so that training does not descend the evaluator's own feature space.
    """
    key = dataset_key(source, "train", None, "none", None)
    folder = key if seed == 0 else f"{key}-seed{seed}"
    train = load_dataset(source, split="train")
    if train.labels is None:
        raise GenforgeError(
            f"{source}: the classifier extractor needs class labels (class sub-folders or a labels array); "
            "use --features inception for unlabelled data"
        )
    try:
        test = load_dataset(source, split="test")
        test_images, test_labels = test.images, test.labels
    except GenforgeError:  # single-split data: hold out every tenth image for the accuracy figure
        held = np.arange(len(train)) % 10 == 0
        test_images, test_labels = train.images[held], train.labels[held]
        train = replace(train, images=train.images[~held], labels=train.labels[~held])
    return load_or_train_classifier(
        cache_root() / "evaluators" / folder,
        key,
        train.images,
        train.labels,
        test_images,
        test_labels,
        device=device,
        progress=progress,
        epochs=epochs,
        seed=seed,
    )


def get_extractor(name: str, source: str, device: torch.device, progress: bool = True):
    """A feature extractor by name (``FEATURES``) for the real data ``source``."""
    if name == "classifier":
        model, info = train_evaluator(source, device, progress)
        extractor = ClassifierExtractor(model, device)
        extractor.info = info
        return extractor
    if name == "inception":
        return InceptionExtractor(device)  # its weights come from an optional extra, loaded only now
    raise GenforgeError(f"features must be one of {', '.join(FEATURES)}, got {name!r}")


def reference(
    extractor, data_cfg: DataConfig, split: str = "train", n: int = REAL_N, progress: bool = True
) -> Reference:
    """Cached statistics of ``n`` real images (0 = all), loaded exactly as the run's data config says."""
    real, data_cfg = load_configured(replace(data_cfg, limit=n), split=split)
    key = dataset_key(data_cfg.source, split, data_cfg.resolution, data_cfg.fit, data_cfg.channels or None)
    # The statistics are features of one set of weights: a retrained classifier gets its own file.
    info = getattr(extractor, "info", None)
    weights = f"-{hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:8]}" if info else ""
    path = cache_root() / "reference" / f"{key}_n{len(real)}_{extractor.name}{weights}.npz"
    return reference_stats(real.images, real.labels, extractor, cache_path=path, progress=progress)
