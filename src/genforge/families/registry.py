"""The family registry: what a model family declares, once, in its own module.

A family (``gan``, ``vqvae``, ``prior``, or one of your own) is a ``FamilySpec``: its run config
class and presets, and five functions that the rest of genforge calls without knowing which
family it holds:

    prepare(config, progress)           -> Prepared  data loaded, config filled from it; writes nothing
    build(prepared, device, dtype)      -> Trainer   modules + optimizers + train_step, for the loop
    load(checkpoint, device)            -> Model     a trained model rebuilt from a checkpoint alone
    evaluate(model, EvalContext)        -> dict      what "how good is it?" means for this family
    data_config(checkpoint)             -> DataConfig the real data its samples are compared with

plus optional hooks (extra CLI flags, data the trainer needs made in the run folder, work after
training, legacy-config migration, export graphs). ``register`` adds a spec; training, the CLI,
sampling, evaluation and the report look families up with ``get``. See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, from_dict, resolve
from genforge.errors import GenforgeError
from genforge.images import to_uint8
from genforge.metrics.evaluate import Reference, evaluate_features, extract
from genforge.progress import track


@dataclass
class Prepared:
    """What ``prepare`` found: the config completed from the data, and the training examples."""

    config: Any
    images: Any  # uint8 (N, H, W, C) images (or a packed dataset); None until ``training_data`` makes them
    labels: np.ndarray | None
    num_classes: int | None = None
    data_config: DataConfig | None = None  # the real data samples are compared with (in-training evaluation)
    extras: dict[str, Any] = field(default_factory=dict)  # family-specific (the prior's VQ-VAE, ...)
    notes: list[str] = field(default_factory=list)  # one-line facts training prints at start (how data was fitted)
    mirror: bool = False  # x-flip each real image with probability 0.5 when drawn (the config's augment.mirror)


class Trainer(Protocol):
    """The training loop's view of a family: built over one device, stepped by the loop."""

    device: torch.device
    noise: torch.Generator  # the family's own random draws (checkpointed with the run)

    def modules(self) -> dict[str, torch.nn.Module]: ...  # everything checkpointed, by name

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]: ...

    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor: ...  # (n, C, H, W) in [-1, 1]

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None: ...


class Model(Protocol):
    """A trained model rebuilt from a checkpoint (``genforge sample``, ``evaluate``, ``export``)."""

    device: torch.device
    config: Any
    step: int
    num_classes: int  # 0 when it cannot be asked for a class

    def sample(self, n: int, generator: torch.Generator, **options: Any) -> torch.Tensor: ...


@dataclass
class EvalContext:
    """Everything an evaluation compares against, chosen once by the evaluate command."""

    extractor: Any  # a metrics FeatureExtractor
    reference: Reference  # the real data's statistics in that extractor's space
    data: DataConfig  # the real data, loaded as the run saw it
    n: int
    seed: int
    device: torch.device
    progress: bool = True
    run_dir: Path | None = None  # the run folder, when evaluating a run


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the word on the command line and in checkpoints: `genforge train NAME`
    summary: str  # one line for --help
    config_class: type
    presets: Mapping[str, dict[str, Any]]
    prepare: Callable[[Any, bool], Prepared]
    build: Callable[[Prepared, torch.device, torch.dtype], Trainer]
    load: Callable[[ckpt.Checkpoint, torch.device], Model]
    evaluate: Callable[[Model, EvalContext], dict[str, Any]]
    data_config: Callable[[ckpt.Checkpoint], DataConfig] = lambda c: _data_config(c)
    # (prepared, run_dir, device, progress) -> None: make what training needs inside the run
    # folder (the prior's code cache); runs after the run folder is locked.
    training_data: Callable[[Prepared, Path, torch.device, bool], None] | None = None
    # (run_dir, prepared, device, progress) -> dict of scores recorded as an "eval" record
    finish: Callable[[Path, Prepared, torch.device, bool], dict[str, float] | None] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    from_arguments: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    migrate: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # an old run's config -> today's
    grid_caption: str = "samples"  # what the pictures in samples/ show
    cannot_sample: str | None = None  # why `genforge sample` does not apply to this family, if it does not
    exports: Mapping[str, Callable[[Model], Any]] = field(default_factory=dict)  # part -> models.graphs graph
    cannot_export: str | None = None  # why `genforge export` refuses this family, if it does

    def resolve(self, preset: str | None = "default", config_file=None, sets=(), extra=None) -> Any:
        """defaults < preset < YAML file < --set overrides < explicit flags (``extra``)."""
        return resolve(self.config_class, self.presets, preset, config_file, sets, extra)

    def config_of(self, c: ckpt.Checkpoint) -> Any:
        """The run config stored in a checkpoint, as today's config class (old runs migrated)."""
        values = self.migrate(c.config) if self.migrate is not None else c.config
        return from_dict(self.config_class, values)


def _data_config(c: ckpt.Checkpoint) -> DataConfig:
    return from_dict(DataConfig, c.config.get("data", {}))


FAMILIES: dict[str, FamilySpec] = {}


def register(spec: FamilySpec) -> FamilySpec:
    """Add a family (a later spec of the same name replaces the earlier one)."""
    FAMILIES[spec.name] = spec
    return spec


def get(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise GenforgeError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def names() -> list[str]:
    return list(FAMILIES)


def load(path: str | Path, device: torch.device) -> tuple[FamilySpec, Model]:
    """A run folder or checkpoint -> its family and the trained model, rebuilt from the file alone."""
    c = ckpt.load(path, kind=tuple(FAMILIES), map_location=device)
    spec = get(c.kind)
    return spec, spec.load(c, device)


# ---------------------------------------------------------------------------------------------
# Shared by the families that generate images (and by a user's own)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: Model,
    n: int,
    seed: int = 0,
    batch_size: int = 500,
    class_probs: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """``n`` uint8 samples (N, H, W, C), the sampling speed in images/s, and the class each
    sample was asked for (None for an unconditional model).

    A class-conditional model draws its classes from the data's class frequencies, so its
    samples follow p(y) p(x | y): the same target distribution as an unconditional model's.
    """
    g = torch.Generator(device=model.device).manual_seed(seed)
    label_g = torch.Generator().manual_seed(seed)
    k = model.num_classes
    p = None
    if k:
        p = torch.as_tensor(class_probs if class_probs is not None else np.full(k, 1 / k), dtype=torch.float64)
    out, asked, spent = [], [], 0.0
    for start in track(range(0, n, batch_size), "sampling", enabled=progress):
        b = min(batch_size, n - start)
        t0 = time.perf_counter()
        if p is not None:
            labels = torch.multinomial(p, b, replacement=True, generator=label_g).to(model.device)
            images = model.sample(b, g, class_label=labels)
            asked.append(labels.cpu().numpy())
        else:
            images = model.sample(b, g)
        spent += time.perf_counter() - t0
        out.append(to_uint8(images))
    return np.concatenate(out), n / max(spent, 1e-9), (np.concatenate(asked) if asked else None)


def score_generator(model: Model, ctx: EvalContext) -> dict[str, Any]:
    """Sample ``ctx.n`` images and score them against the reference: a generator's evaluation.

    For a class-conditional model scored with the dataset's own classifier, also how often the
    classifier finds the class that was asked for (``class_accuracy``, and its worst class). A
    model with sampling settings (``genforge tune``) names the ones it drew with (``sampling``).
    """
    hist = ctx.reference.class_hist
    class_probs = None if hist is None else np.asarray(hist, np.float64) / np.sum(hist)
    fake, speed, asked = generate(model, ctx.n, ctx.seed, class_probs=class_probs, progress=ctx.progress)
    feats, probs = extract(fake, ctx.extractor, progress=ctx.progress, desc="sample features")
    scores = evaluate_features(feats, probs, ctx.reference)
    scores["sample_images_per_s"] = speed
    if hasattr(model, "sampling_note"):
        scores["sampling"] = model.sampling_note()
    if asked is not None and probs is not None and probs.shape[1] == model.num_classes:
        hit = probs.argmax(axis=1) == asked
        scores["class_accuracy"] = float(hit.mean())
        scores["class_accuracy_min"] = float(min(hit[asked == k].mean() for k in np.unique(asked)))
    return scores
