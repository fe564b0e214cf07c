"""Evaluation during training (``train.eval_every``): cheap, a collapse alarm.

The features follow the data (``metrics.extractors.choose_features``): the dataset's classifier when
it has labels, else Inception. Inception is slow on a CPU (about 0.1 s an image), so its sample
count is fitted to the run's budget: measured on the machine, scoring (the reference once, then
each evaluation) may take ``INCEPTION_SHARE`` of the time budget, and never more than
``INCEPTION_SECONDS`` per evaluation; ``train.eval_samples`` stays the upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from genforge.config import TrainConfig
from genforge.data import load_configured
from genforge.errors import GenforgeError
from genforge.images import to_uint8
from genforge.metrics.evaluate import DC_K, collapse_warning, evaluate_samples
from genforge.metrics.extractors import choose_features, get_extractor, reference
from genforge.metrics.table import during_training
from genforge.progress import SILENT, Reporter

INCEPTION_SHARE = 0.1  # of a time budget that in-training Inception scoring may take
INCEPTION_SECONDS = 60.0  # at most per evaluation (and for the reference), budget or not
ASSUMED_EVALUATIONS = 10  # a run limited by minutes alone: how many evaluations its budget is split over
MIN_SAMPLES = 2 * DC_K  # fewer make the k-NN metrics meaningless


def inception_samples(cfg: TrainConfig, seconds_per_image: float) -> tuple[int, str]:
    """How many samples each in-training Inception evaluation scores, and the reason in words.

    The reference (of as many real images) is made once; with ``e`` evaluations in a budget of
    ``B`` seconds, (e + 1) * n * seconds_per_image <= INCEPTION_SHARE * B. ``e`` is
    steps // eval_every when the steps are given, else ``ASSUMED_EVALUATIONS``.
    """
    cap = max(MIN_SAMPLES, int(INCEPTION_SECONDS / seconds_per_image))
    why = f"{seconds_per_image:.3f} s/image measured; at most {INCEPTION_SECONDS:.0f} s per evaluation"
    if cfg.minutes > 0:
        evaluations = cfg.steps // cfg.eval_every if cfg.steps else ASSUMED_EVALUATIONS
        share = int(INCEPTION_SHARE * cfg.minutes * 60 / ((evaluations + 1) * seconds_per_image))
        if share < cap:
            cap = max(MIN_SAMPLES, share)
            assumed = "" if cfg.steps else " assumed"
            why = (
                f"{INCEPTION_SHARE:.0%} of the {cfg.minutes:g}-minute budget over {evaluations}{assumed} "
                f"evaluations and the reference, at {seconds_per_image:.3f} s/image measured"
            )
    n = min(cfg.eval_samples or cap, cap)
    if n < cap:
        why = f"train.eval_samples; {why}"
    return n, why


def _seconds_per_image(extractor, images: np.ndarray) -> float:
    """Time the extractor on a few real images (after one warm-up batch)."""
    extractor.features(images[:2])
    started = time.perf_counter()
    extractor.features(images)
    return max((time.perf_counter() - started) / len(images), 1e-6)


def training_evaluator(trainer, prepared, reporter: Reporter = SILENT) -> Callable[[int], dict[str, float]]:
    """``evaluate(step) -> scores`` over samples of the trainer's sampler (``train.eval_samples``
    with classifier features; a budget-fitted count with Inception's).

    Says the choice in one line through ``reporter``, and a warning when coverage or recall falls sharply against the
    best seen so far.
    """
    if trainer.evaluation_samples is None:
        raise GenforgeError("train.eval_every applies to families that generate images; set it to 0 for this one")
    cfg = prepared.config.train
    data_cfg = prepared.data_config
    features, why = choose_features(data_cfg.source)
    extractor = get_extractor(features, data_cfg.source, trainer.device, reporter)
    if features == "classifier":
        n = cfg.eval_samples or 2000
        ref = reference(extractor, replace(data_cfg, limit=0), n=max(n, 2000), reporter=reporter)
        said = f"in-training evaluation: classifier features, n={n:,} ({why})"
    else:
        # real images: the model's own draws stay untouched
        probe, _ = load_configured(replace(data_cfg, limit=8), reporter=reporter)
        n, fitted = inception_samples(cfg, _seconds_per_image(extractor, probe.images))
        ref = reference(extractor, replace(data_cfg, limit=0), n=n, reporter=reporter)
        said = f"in-training evaluation: inception features, n={n:,} ({why}; {fitted})"
    reporter.say(said)
    history: list[dict] = []

    def evaluate_now(step: int) -> dict[str, float]:
        g = torch.Generator(device=trainer.device).manual_seed(step)
        chunks = [to_uint8(trainer.evaluation_samples(min(500, n - i), g)) for i in range(0, n, 500)]
        scores = evaluate_samples(np.concatenate(chunks), ref, extractor, kid_subsets=10)
        keep = {k: float(scores[k]) for k in during_training() if k in scores}
        warning = collapse_warning(history, keep)
        if warning:
            reporter.say(f"\nwarning at step {step}: {warning}")
        history.append(keep)
        return {**keep, "n": n}

    return evaluate_now
