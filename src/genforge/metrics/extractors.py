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
from genforge.data import ImageData, dataset_key, labels_of, load_configured, load_dataset
from genforge.errors import GenforgeError
from genforge.metrics.classifier import INFO_FILE, ClassifierExtractor, load_or_train_classifier
from genforge.metrics.evaluate import Reference, reference_stats
from genforge.metrics.inception import InceptionExtractor
from genforge.paths import cache_root
from genforge.progress import SILENT, Reporter

FEATURES = ("classifier", "inception")
REAL_N = 10_000  # real images in the reference set (k-NN metrics grow with its square)
# tune's reference holds out every TUNE_EVERY-th training image of a split too small for two
# REAL_N sets (a fifth), so that it samples every part of a split stored in class order.
TUNE_EVERY = 5
LARGE = REAL_N * TUNE_EVERY // (TUNE_EVERY - 1)  # 12,500: from here evaluate keeps its first REAL_N
PURPOSES = ("evaluate", "tune")


def choose_features(source: str, features: str | None = None) -> tuple[str, str]:
    """The feature network for the real data ``source`` and why, in words ("the data has no labels").

    Asked for by name: that one. Otherwise the data decides: the dataset's classifier when its
    training split has labels of at least two classes (the classifier is trained on them, once),
    Inception when it has none.
    """
    if features is not None:
        if features not in FEATURES:
            raise GenforgeError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        return features, "as asked"
    key = dataset_key(source, "train", None, "none", None)
    if (cache_root() / "evaluators" / key / INFO_FILE).is_file():
        return "classifier", "the data has labels; its classifier is cached"
    labels = labels_of(source, split="train")
    if labels is None:
        return "inception", "the data has no labels"
    if len(np.unique(labels)) < 2:
        return "inception", "the data's labels name a single class: no classifier to train"
    return "classifier", "the data has labels"


def reference_indices(n_train: int) -> tuple[np.ndarray, range]:
    """Which images of a training split of ``n_train`` images ``evaluate`` and ``tune`` compare
    with: disjoint, so tuning never sees the images a reported figure uses.

    A split of at least ``LARGE`` (12,500) images: evaluate the first ``REAL_N``, as genforge
    always has; tune up to ``REAL_N`` of the rest, evenly spaced over it (Fashion-MNIST: every
    fifth image from 10,000 on). A smaller split: tune every ``TUNE_EVERY``-th image (from the
    fifth), evaluate the others (the 3,786 emoji: 757 and 3,029). Evaluate's indices come as an
    array, tune's as a range.
    """
    if n_train >= LARGE:
        step = max(1, (n_train - REAL_N) // REAL_N)
        return np.arange(REAL_N), range(REAL_N, min(n_train, REAL_N + step * REAL_N), step)
    held = range(TUNE_EVERY - 1, n_train, TUNE_EVERY)
    return np.delete(np.arange(n_train), np.asarray(held, dtype=np.int64)), held


def describe_tune_reference(held: range, n_train: int) -> str:
    """tune's reference in words: "757 of the 3,786 training images (one in 5 from image 4; evaluate
    reports on others: none shared)"."""
    which = (
        f"one in {held.step} from image {held.start:,}" if held.step > 1 else f"images {held.start:,}-{held.stop - 1:,}"
    )
    return f"{len(held):,} of the {n_train:,} training images ({which}; evaluate reports on others: none shared)"


def train_evaluator(
    source: str, device: torch.device, reporter: Reporter = SILENT, epochs: int = 3, seed: int = 0
) -> tuple[Any, dict]:
    """The dataset's classifier (trained on its labelled train split, cached with its test accuracy).

    ``seed`` > 0 gives another classifier of the same kind, trained from another initialisation
    and batch order and cached beside the evaluator (``<key>-seed<N>``): the VQ-VAE's perceptual
    loss uses one, so that training does not descend the evaluator's own feature space.
    """
    key = dataset_key(source, "train", None, "none", None)
    folder = key if seed == 0 else f"{key}-seed{seed}"
    train = load_dataset(source, split="train", reporter=reporter)
    if train.labels is None:
        raise GenforgeError(
            f"{source}: the classifier extractor needs class labels (class sub-folders or a labels array); "
            "use --features inception for unlabelled data"
        )
    try:
        test = load_dataset(source, split="test", reporter=reporter)
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
        reporter=reporter,
        epochs=epochs,
        seed=seed,
    )


def get_extractor(name: str, source: str, device: torch.device, reporter: Reporter = SILENT):
    """A feature extractor by name (``FEATURES``) for the real data ``source``."""
    if name == "classifier":
        model, info = train_evaluator(source, device, reporter)
        extractor = ClassifierExtractor(model, device)
        extractor.info = info
        return extractor
    if name == "inception":
        return InceptionExtractor(device)  # its weights come from an optional extra, loaded only now
    raise GenforgeError(f"features must be one of {', '.join(FEATURES)}, got {name!r}")


def reference_images(
    data_cfg: DataConfig,
    split: str = "train",
    n: int = REAL_N,
    purpose: str = "evaluate",
    reporter: Reporter = SILENT,
) -> tuple[ImageData, np.ndarray, int, DataConfig]:
    """The real images a reference is made of, their indices in ``split``, the split's size (as
    far as it was read), and the data section made concrete. ``purpose`` "evaluate": up to ``n``
    (0 = all) of evaluate's images of the training split (``reference_indices``); "tune": tune's.
    Another split: its first ``n``."""
    if purpose not in PURPOSES:
        raise GenforgeError(f"a reference is made for one of {', '.join(PURPOSES)}, not {purpose!r}")
    if split != "train":
        if purpose == "tune":
            raise GenforgeError("tune's reference comes from the training split")
        real, data_cfg = load_configured(replace(data_cfg, limit=n), split=split, reporter=reporter)
        return real, np.arange(len(real)), len(real), data_cfg
    # evaluate's images are the first REAL_N of any split of LARGE or more: LARGE images tell which
    # case holds; tune's may lie anywhere (a packed dataset is opened, not read, and read by index)
    limit = LARGE if purpose == "evaluate" else 0
    data, data_cfg = load_configured(replace(data_cfg, limit=limit), split=split, lazy=True, reporter=reporter)
    for_evaluate, for_tune = reference_indices(len(data))
    chosen = np.asarray(for_tune, dtype=np.int64) if purpose == "tune" else for_evaluate[: n or None]
    if len(chosen) == 0:
        raise GenforgeError(f"{data_cfg.source}: too few training images ({len(data)}) for a {purpose} reference")
    labels = None if data.labels is None else data.labels[chosen]
    images = ImageData(images=data.take(chosen), labels=labels, class_names=None, source=str(data_cfg.source))
    return images, chosen, len(data), data_cfg


def reference(
    extractor,
    data_cfg: DataConfig,
    split: str = "train",
    n: int = REAL_N,
    reporter: Reporter = SILENT,
    purpose: str = "evaluate",
) -> Reference:
    """Cached statistics of the real images ``reference_images`` picks, loaded exactly as the run's
    data config says."""
    real, indices, _, data_cfg = reference_images(data_cfg, split, n, purpose, reporter)
    key = dataset_key(data_cfg.source, split, data_cfg.resolution, data_cfg.fit, data_cfg.channels or None)
    # The statistics are features of one set of weights: a retrained classifier gets its own file.
    info = getattr(extractor, "info", None)
    weights = f"-{hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:8]}" if info else ""
    where = f"n{len(real)}" if purpose == "evaluate" else f"tune{len(real)}"
    path = cache_root() / "reference" / f"{key}_{where}_{extractor.name}{weights}.npz"
    return reference_stats(real.images, real.labels, extractor, cache_path=path, reporter=reporter)
