"""Starting and resuming runs: the library side of ``genforge train``.

Order matters for the "nothing half-written" rule: the config is resolved and checked, the data
loaded and checked, an existing run's config compared, and only then is the run folder touched.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genforge import checkpoint as ckpt
from genforge.config import dump_yaml, to_dict
from genforge.errors import GenforgeError
from genforge.training.device import pick_device, pick_precision
from genforge.training.loop import RunResult, run

# Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE = {
    "steps",
    "minutes",
    "device",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "eval_samples",
    "compile",
    "grid_images",
}


def check_resume(out: Path, kind: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """If ``out`` holds a run, make sure it is of ``kind`` and trains the same thing; return its config."""
    if out.exists() and not out.is_dir():
        raise GenforgeError(f"{out}: exists and is not a folder; pick another --out")
    found = ckpt.find(out) if (out / "checkpoints").is_dir() else None
    if found is None:
        return None
    saved = ckpt.load(found, kind=kind)
    differences = _differences(saved.config, config)
    if differences:
        key, old, new = differences[0]
        raise GenforgeError(
            f"{out} holds a run with {key}={old!r}, this command asks for {new!r}; "
            "resume with the same settings or train into a new --out folder"
        )
    return saved.config


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if prefix == "train." and key in RESUMABLE:
                continue
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def write_config(out: Path, config: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".config.")
    with os.fdopen(fd, "w") as f:
        f.write(dump_yaml(config))
    os.replace(tmp, out / "config.yaml")


def start(
    kind: str,
    config: Any,
    out: Path,
    build: Callable[[Any, Any, Any], Any],
    images,
    labels,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    evaluate_factory: Callable[[Any], Callable[[int], dict]] | None = None,
) -> RunResult:
    """Check, then create/resume the run folder and train. ``build(config, device, dtype) -> family``."""
    out = Path(out)
    check_resume(out, kind, to_dict(config))
    device = pick_device(config.train.device)
    dtype = pick_precision(config.train.precision, device)
    family = build(config, device, dtype)
    write_config(out, config)
    if progress:
        print(f"training {kind} on {device} ({str(dtype).replace('torch.', '')}) -> {out}", file=sys.stderr)
    evaluate = evaluate_factory(family) if evaluate_factory is not None else None
    return run(
        family,
        images,
        labels,
        config.train,
        out,
        to_dict(config),
        noise={"noise": family.noise},
        evaluate=evaluate,
        progress=progress,
        stop_after=stop_after,
    )


def load_data(cfg, split: str = "train"):
    """DataConfig -> ImageData, fitted to the configured resolution and channels."""
    from genforge.data import load_dataset

    return load_dataset(
        cfg.source,
        split=split,
        resolution=cfg.resolution,
        fit=cfg.fit,
        channels=cfg.channels or None,
        limit=cfg.limit or None,
    )


def train_gan(config, out: Path, *, progress: bool = True, stop_after: int | None = None, dry_run: bool = False):
    """Train (or resume) a GAN run. Returns the RunResult, or the resolved config with dry_run."""
    from genforge.training.gan import GANFamily, build_config

    data = load_data(config.data)
    config = build_config(config, data.resolution, data.channels)
    if dry_run:
        return config
    return start(
        "gan",
        config,
        out,
        lambda c, device, dtype: GANFamily(c, device, dtype),
        data.images,
        data.labels,
        progress=progress,
        stop_after=stop_after,
        evaluate_factory=_training_evaluator(config.data, config.train, progress),
    )


def _training_evaluator(data_cfg, train_cfg, progress: bool):
    """With train.eval_every > 0: a factory for the cheap in-training evaluation (classifier features)."""
    if not train_cfg.eval_every:
        return None
    from genforge.evaluation import make_training_evaluator

    return lambda family: make_training_evaluator(family, data_cfg, train_cfg.eval_samples or 2000, progress)


def train_vqvae(config, out: Path, *, progress: bool = True, stop_after: int | None = None, dry_run: bool = False):
    """Train (or resume) a VQ-VAE run."""
    from genforge.images import to_float
    from genforge.training.vqvae import VQVAEFamily, build_config

    data = load_data(config.data)
    config = build_config(config, data.resolution, data.channels)
    if dry_run:
        return config
    grid = to_float(data.images[: config.train.grid_images // 2])

    def build(c, device, dtype):
        return VQVAEFamily(c, device, dtype, grid_images=grid)

    return start("vqvae", config, out, build, data.images, data.labels, progress=progress, stop_after=stop_after)


def train_prior(config, out: Path, *, progress: bool = True, stop_after: int | None = None, dry_run: bool = False):
    """Train (or resume) a prior over the codes of the VQ-VAE run ``config.vqvae``."""
    import json

    import numpy as np
    import torch

    from genforge.metrics.core import bits_per_dim
    from genforge.models.prior import PriorConfig
    from genforge.training import prior as P

    if not config.vqvae:
        raise GenforgeError("a prior needs its VQ-VAE: pass --vqvae RUN")
    out = Path(out)
    device = pick_device(config.train.device)
    c_vq = ckpt.load(config.vqvae, kind="vqvae", map_location=device)
    vqvae, vq_cfg = P.load_vqvae(c_vq, device)
    data = load_data(vq_cfg.data)
    num_classes = data.num_classes if (config.conditional and data.labels is not None) else 0
    m = to_dict(config.model)
    m.update(vocab_size=vqvae.num_codes, grid_h=vqvae.grid_size[0], grid_w=vqvae.grid_size[1], num_classes=num_classes)
    config.model = PriorConfig(**m)
    config.vqvae = str(Path(config.vqvae))
    if dry_run:
        return config
    check_resume(out, "prior", to_dict(config))
    key = f"{c_vq.path.resolve()}@{c_vq.step}"

    def make():
        arrays = {"train": P.encode_images(vqvae, data.images, device, progress=progress)}
        if data.labels is not None:
            arrays["train_labels"] = data.labels
        try:
            test = load_data(vq_cfg.data, split="test")
        except GenforgeError:
            return arrays  # single-split data: no held-out NLL
        arrays["test"] = P.encode_images(vqvae, test.images, device, progress=progress)
        if test.labels is not None:
            arrays["test_labels"] = test.labels
        return arrays

    if progress:
        print(f"codes of {len(data)} images from {c_vq.path} (cached in {out / 'codes.npz'})", file=sys.stderr)
    codes = P.cached_codes(out / "codes.npz", key, make)
    vq_config = c_vq.config
    result = start(
        "prior",
        config,
        out,
        lambda c, dev, dtype: P.PriorFamily(c, vqvae, vq_config, dev, dtype),
        codes["train"].astype(np.int64),
        codes.get("train_labels"),
        progress=progress,
        stop_after=stop_after,
        evaluate_factory=_training_evaluator(vq_cfg.data, config.train, progress),
    )
    if "test" in codes and not result.interrupted:
        sampler = P.PriorSampler(ckpt.load(out, kind="prior", map_location=device), device)
        labels = torch.from_numpy(codes["test_labels"]).long() if "test_labels" in codes else None
        nats = sampler.family.test_nll(torch.from_numpy(codes["test"].astype(np.int64)), labels)
        h, w = vqvae.grid_size
        scores = {
            "test_nll_nats_per_code": nats,
            "test_bits_per_dim": bits_per_dim(nats, h * w, vq_cfg.model.resolution**2, vq_cfg.model.in_channels),
        }
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": result.step, "eval": scores}) + "\n")
        result.last.update(scores)
        if progress:
            print(f"test NLL {nats:.4f} nats/code, {scores['test_bits_per_dim']:.4f} bits/dim", file=sys.stderr)
    return result
