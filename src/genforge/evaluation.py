"""``genforge evaluate``: how good is a run, and is it collapsing?

Joins runs (GAN, VQ-VAE, prior) or plain image sets to the metrics package: picks the feature
extractor, loads the real data the same way the run saw it, samples or reconstructs, scores,
and appends the result to the run's ``metrics.jsonl``.

Caches (classifier weights, real-data statistics) live under ``$GENFORGE_CACHE`` or
``${XDG_CACHE_HOME:-~/.cache}/genforge``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig
from genforge.errors import GenforgeError
from genforge.images import to_uint8

FEATURES = ("classifier", "inception")
REAL_N = 10_000  # real images in the reference set (k-NN metrics grow with its square)


def cache_root() -> Path:
    if os.environ.get("GENFORGE_CACHE"):
        return Path(os.environ["GENFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genforge"


# ---------------------------------------------------------------------------------------------
# Feature extractors
# ---------------------------------------------------------------------------------------------


def train_evaluator(source: str, device: torch.device, progress: bool = True, epochs: int = 3) -> tuple[Any, dict]:
    """The dataset's classifier (trained on its labelled train split, cached with its test accuracy)."""
    from genforge.data import dataset_key, load_dataset
    from genforge.metrics.classifier import load_or_train_classifier

    key = dataset_key(source, "train", None, "none", None)
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
        cache_root() / "evaluators" / key,
        key,
        train.images,
        train.labels,
        test_images,
        test_labels,
        device=device,
        progress=progress,
        epochs=epochs,
    )


def get_extractor(name: str, source: str, device: torch.device, progress: bool = True):
    if name == "classifier":
        from genforge.metrics.classifier import ClassifierExtractor

        model, info = train_evaluator(source, device, progress)
        extractor = ClassifierExtractor(model, device)
        extractor.info = info
        return extractor
    if name == "inception":
        from genforge.metrics.inception import InceptionExtractor

        return InceptionExtractor(device)
    raise GenforgeError(f"--features must be one of {', '.join(FEATURES)}, got {name!r}")


def reference(extractor, data_cfg: DataConfig, split: str = "train", n: int = REAL_N, progress: bool = True):
    """Cached statistics of ``n`` real images, loaded exactly as the run's data config says."""
    from genforge.data import dataset_key
    from genforge.metrics.evaluate import reference_stats
    from genforge.training.runs import load_data

    real = load_data(replace(data_cfg, limit=n), split=split)
    key = dataset_key(data_cfg.source, split, data_cfg.resolution, data_cfg.fit, data_cfg.channels or None)
    # The statistics are features of one set of weights: a retrained classifier gets its own file.
    info = getattr(extractor, "info", None)
    weights = f"-{hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:8]}" if info else ""
    path = cache_root() / "reference" / f"{key}_n{len(real)}_{extractor.name}{weights}.npz"
    return reference_stats(real.images, real.labels, extractor, cache_path=path, progress=progress)


# ---------------------------------------------------------------------------------------------
# Sampling for evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    sampler, n: int, seed: int = 0, batch_size: int = 500, class_probs: np.ndarray | None = None, progress: bool = True
) -> tuple[np.ndarray, float]:
    """``n`` uint8 samples from a GAN or prior sampler, and the sampling speed in images/s.

    A class-conditional prior draws its classes from the data's class frequencies, so its samples
    follow p(y) p(x | y): the same target distribution as an unconditional GAN's.
    """
    from tqdm import tqdm

    g = torch.Generator(device=sampler.device).manual_seed(seed)
    out, spent = [], 0.0
    conditional = getattr(sampler, "kind", "") == "prior" and sampler.config.model.num_classes > 0
    for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress, file=sys.stderr, leave=False):
        b = min(batch_size, n - start)
        t0 = time.perf_counter()
        if conditional:
            k = sampler.config.model.num_classes
            p = torch.as_tensor(class_probs if class_probs is not None else np.full(k, 1 / k), dtype=torch.float64)
            labels = torch.multinomial(p, b, replacement=True, generator=torch.Generator().manual_seed(seed + start))
            codes = sampler.family.generate_codes(b, g, labels=labels.to(sampler.device))
            images = sampler.family.decode(codes)
        else:
            images = sampler.sample(b, g)
        spent += time.perf_counter() - t0
        out.append(to_uint8(images))
    return np.concatenate(out), n / max(spent, 1e-9)


# ---------------------------------------------------------------------------------------------
# One command
# ---------------------------------------------------------------------------------------------


def _run_data_config(c: ckpt.Checkpoint) -> DataConfig:
    from genforge.config import from_dict

    if c.kind == "prior":
        return from_dict(DataConfig, c.state["extra"]["vqvae_config"]["data"])
    return from_dict(DataConfig, c.config["data"])


def _read_images(path: Path) -> np.ndarray:
    from genforge.data import load_dataset

    return load_dataset(str(path), split="all").images


def evaluate(
    target: str | Path,
    *,
    data: str | None = None,
    n: int = 10_000,
    features: str = "classifier",
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    progress: bool = True,
    record: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a run folder (GAN, VQ-VAE, prior) or a folder/.npz of images against real data.

    ``extra`` entries (e.g. the real-vs-real floor) are stored with the result.
    """
    from genforge.metrics.evaluate import evaluate_samples, reconstruction_metrics

    if n <= 0:
        raise GenforgeError(f"--n must be positive, got {n}")
    target = Path(target)
    is_run = target.is_dir() and ((target / "checkpoints").is_dir() or (target / ckpt.META).is_file())
    result: dict[str, Any] = {"features": features, "n": n}
    if not is_run:  # images from any other tool
        if data is None:
            raise GenforgeError(
                "evaluating a folder or .npz of images needs --data NAME (the real data to compare with)"
            )
        fake = _read_images(target)[:n]
        data_cfg = DataConfig(
            source=data,
            resolution=fake.shape[1],
            fit="pad" if fake.shape[1] >= 28 else "resize",
            channels=fake.shape[3],
        )
        extractor = get_extractor(features, data, device, progress)
        ref = reference(extractor, data_cfg, progress=progress)
        result.update(evaluate_samples(fake, ref, extractor, progress=progress), data=data, n=len(fake))
        return result

    c = ckpt.load(target, kind=("gan", "vqvae", "prior"), map_location=device)
    data_cfg = _run_data_config(c)
    if data is not None:
        data_cfg = replace(data_cfg, source=data)
    result.update(data=data_cfg.source, kind=c.kind)
    extractor = get_extractor(features, data_cfg.source, device, progress)
    ref = reference(extractor, data_cfg, progress=progress)
    if c.kind == "vqvae":
        from genforge.metrics.core import codebook_usage, perplexity
        from genforge.training.prior import encode_images, load_vqvae
        from genforge.training.runs import load_data
        from genforge.vqtools import reconstruct_images

        model, _ = load_vqvae(c, device)
        test = load_data(replace(data_cfg, limit=n), split="test")
        t0 = time.perf_counter()
        recon = reconstruct_images(model, test.images, device)
        result["reconstruct_images_per_s"] = len(test) / (time.perf_counter() - t0)
        result.update(reconstruction_metrics(test.images, recon))
        codes = encode_images(model, test.images, device, progress=False)
        counts = np.bincount(codes.ravel().astype(np.int64), minlength=model.num_codes)
        result.update(codebook_usage=codebook_usage(counts), codebook_perplexity=perplexity(counts))
        # How far reconstructions are from the data, in the same feature space as the generators.
        scores = evaluate_samples(recon, ref, extractor, progress=progress)
        result.update({f"recon_{k}": v for k, v in scores.items() if k in ("fd", "kid", "precision", "recall")})
        result["n"] = len(test)
    else:
        from genforge.sampling import load_sampler

        sampler = load_sampler(target, device)
        fake, speed = generate(sampler, n, seed, class_probs=_class_probs(ref), progress=progress)
        result.update(evaluate_samples(fake, ref, extractor, progress=progress))
        result["sample_images_per_s"] = speed
        if c.kind == "prior":
            result.update(_prior_nll(target))
    result.update(extra or {})
    if record:
        with open(target / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": c.step, "evaluation": _plain(result)}) + "\n")
    return result


def real_vs_real(
    data: str,
    *,
    n: int = 10_000,
    features: str = "classifier",
    resolution: int = 32,
    fit: str = "pad",
    device: torch.device = torch.device("cpu"),
    progress: bool = True,
) -> dict[str, Any]:
    """The floor: a train subset against the test split, through the same pipeline."""
    from genforge.metrics.evaluate import evaluate_samples
    from genforge.training.runs import load_data

    data_cfg = DataConfig(source=data, resolution=resolution, fit=fit)
    extractor = get_extractor(features, data, device, progress)
    ref = reference(extractor, data_cfg, progress=progress)
    test = load_data(replace(data_cfg, limit=n), split="test")
    scores = evaluate_samples(test.images, ref, extractor, progress=progress)
    return {"features": features, "n": len(test), "data": data, "kind": "real-vs-real", **scores}


def _class_probs(ref) -> np.ndarray | None:
    hist = getattr(ref, "class_hist", None)
    return None if hist is None else np.asarray(hist, dtype=np.float64) / np.sum(hist)


def _prior_nll(run: Path) -> dict[str, float]:
    """The held-out NLL the prior's training recorded (computed on the whole test split)."""
    found: dict[str, float] = {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            ev = rec.get("eval") or {}
            if "test_nll_nats_per_code" in ev:
                found = {k: ev[k] for k in ("test_nll_nats_per_code", "test_bits_per_dim") if k in ev}
    return found


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in values.items()}


def make_training_evaluator(family, data_cfg: DataConfig, n: int, progress: bool = True):
    """A cheap evaluation for use during training: classifier features, ``n`` samples.

    Returns ``evaluate(step) -> dict`` that also prints a warning when coverage or recall falls
    sharply against the best seen so far (mode collapse).
    """
    from genforge.metrics.evaluate import collapse_warning, evaluate_samples

    extractor = get_extractor("classifier", data_cfg.source, family.device, progress)
    ref = reference(extractor, replace(data_cfg, limit=0), n=max(n, 2000), progress=progress)
    history: list[dict] = []

    def evaluate_now(step: int) -> dict[str, float]:
        g = torch.Generator(device=family.device).manual_seed(step)
        fake = np.concatenate([to_uint8(family.sample_grid(min(500, n - i), g)) for i in range(0, n, 500)])
        scores = evaluate_samples(fake, ref, extractor, kid_subsets=10, progress=False)
        keep = {
            k: float(scores[k])
            for k in ("fd", "precision", "recall", "coverage", "classes_covered", "class_kl")
            if k in scores
        }
        warning = collapse_warning(history, keep)
        if warning and progress:
            print(f"\nwarning at step {step}: {warning}", file=sys.stderr)
        history.append(keep)
        return keep

    return evaluate_now
