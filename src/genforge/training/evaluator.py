"""Evaluation during training (``train.eval_every``): cheap, classifier features, a collapse alarm."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from genforge.errors import GenforgeError
from genforge.images import to_uint8
from genforge.metrics.evaluate import collapse_warning, evaluate_samples
from genforge.metrics.extractors import get_extractor, reference

SCORES = ("fd", "precision", "recall", "coverage", "classes_covered", "class_kl")


def training_evaluator(trainer, prepared, progress: bool = True) -> Callable[[int], dict[str, float]]:
    """``evaluate(step) -> scores`` over ``train.eval_samples`` samples of the trainer's sampler.

    Prints a warning when coverage or recall falls sharply against the best seen so far.
    """
    if trainer.evaluation_samples is None:
        raise GenforgeError("train.eval_every applies to families that generate images; set it to 0 for this one")
    n = prepared.config.train.eval_samples or 2000
    data_cfg = prepared.data_config
    extractor = get_extractor("classifier", data_cfg.source, trainer.device, progress)
    ref = reference(extractor, replace(data_cfg, limit=0), n=max(n, 2000), progress=progress)
    history: list[dict] = []

    def evaluate_now(step: int) -> dict[str, float]:
        g = torch.Generator(device=trainer.device).manual_seed(step)
        chunks = [to_uint8(trainer.evaluation_samples(min(500, n - i), g)) for i in range(0, n, 500)]
        scores = evaluate_samples(np.concatenate(chunks), ref, extractor, kid_subsets=10, progress=False)
        keep = {k: float(scores[k]) for k in SCORES if k in scores}
        warning = collapse_warning(history, keep)
        if warning and progress:
            print(f"\nwarning at step {step}: {warning}", file=sys.stderr, flush=True)
        history.append(keep)
        return keep

    return evaluate_now
