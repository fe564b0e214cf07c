"""The family registry: what a model family declares, once, in its own module.

A family (``gan``, ``stylegan2``, ``fastgan``, ``vqvae``, ``prior``, or one of your own) is a
subclass of ``FamilySpec`` in its own module: its run config class and presets, and the methods
that the rest of genforge calls without knowing which family it holds:

    prepare(config, reporter)           -> Prepared  data loaded, config filled from it; writes nothing
    build(prepared, device, dtype)      -> Trainer   modules + optimizers + train_step, for the loop
    load(checkpoint, device)            -> Model     a trained model rebuilt from a checkpoint alone:
                                                     what it infers with, never a trainer
    evaluate(model, EvalContext)        -> dict      what "how good is it?" means for this family
    data_config(checkpoint)             -> DataConfig the real data its samples are compared with

plus optional hooks (extra ``train`` flags, the ``sample`` flags its models take, data the
trainer needs made in the run folder, work after training, legacy-config migration, export
graphs), whose defaults do nothing. ``Prepared``, the ``Trainer`` base class and ``Family`` (the
part of a family that training calls, ``FamilySpec``'s base) live in ``training.api``, beside the
loop that calls them (imported here too). ``register`` adds an instance; training, the CLI, sampling,
evaluation and the report look families up with ``get``. See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import json
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, from_dict, resolve
from genforge.errors import GenforgeError
from genforge.families.sampling import TunedSampling
from genforge.images import to_uint8
from genforge.metrics.evaluate import Reference, evaluate_features, extract
from genforge.progress import SILENT, Reporter
from genforge.training.api import Family, Prepared, Trainer  # noqa: F401 - defined where training calls them; re-exported here


class Model(Protocol):
    """A trained model rebuilt from a checkpoint (``genforge sample``, ``evaluate``, ``export``).

    It holds only what inference needs (a GAN's sampling generator, a prior and its VQ-VAE's
    decoder, a VQ-VAE's encoder, quantizer and decoder): no discriminator, no optimizer. Loading
    one leaves the caller's global random state as it was and its ``config`` as the checkpoint's.
    What it can do is said by the protocols below, checked with ``isinstance``.
    """

    device: torch.device
    config: Any
    step: int


@runtime_checkable
class Sampler(Model, Protocol):
    """A model that generates images (GANs, priors): ``genforge sample``, generator evaluation, ``tune``."""

    num_classes: int  # 0 when it cannot be asked for a class

    def sample(self, n: int, generator: torch.Generator, **options: Any) -> torch.Tensor: ...  # (n, C, H, W)


@runtime_checkable
class Interpolator(Sampler, Protocol):
    """A sampler with a latent space (GANs): ``genforge sample --interpolate STEPS``."""

    def interpolate(self, rows: int, steps: int, generator: torch.Generator, **options: Any) -> torch.Tensor: ...


@runtime_checkable
class Reconstructor(Model, Protocol):
    """A model that maps images to discrete codes and back (a VQ-VAE): it generates only through
    a prior trained on its codes (``genforge train prior --vqvae RUN``)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...  # (B, C, H, W) in [-1, 1] -> (B, h, w) codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...  # (B, h, w) -> (B, C, H, W) in [-1, 1]

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor: ...  # images -> codes -> images, in one pass


@dataclass
class EvalContext:
    """Everything an evaluation compares against, chosen once by the evaluate command."""

    extractor: Any  # a metrics FeatureExtractor
    reference: Reference  # the real data's statistics in that extractor's space
    data: DataConfig  # the real data, loaded as the run saw it
    n: int
    seed: int
    device: torch.device
    reporter: Reporter = SILENT  # where sampling and feature extraction show their bars
    run_dir: Path | None = None  # the run folder, when evaluating a run


def count(minimum: int) -> Callable[[str], int]:
    """A command-line integer of at least ``minimum`` (an argparse ``type``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def number(text: str) -> float:
    """A finite command-line number (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


@dataclass(frozen=True)
class SampleFlag:
    """A ``genforge sample`` flag a family takes: ``flag`` sets the model's sampling option ``key``.

    Families that share a flag share its key and type; ``help`` says what it means for this
    family (``--truncation`` is a redraw threshold for DCGAN and psi for StyleGAN2), and the
    command's help shows each family's. ``type`` None makes a switch that sets ``value``.
    ``old`` lists former spellings that still work, with a notice (their key is unchanged, so
    the run's sampling.json keeps working).
    """

    flag: str  # "--top-k"
    key: str  # "top_k": the option model.sample takes; "interpolate" is sample's own STEPS
    help: str
    type: Callable[[str], Any] | None = number  # an argparse type (``number``, ``count(k)``)
    value: Any = None  # a switch's value
    metavar: str | None = None
    old: tuple[str, ...] = ()


class FamilySpec(Family):
    """A model family: a family's module subclasses this, fills in the class attributes and the
    methods, and registers one instance (``SPEC = register(GANFamily())``).

    Required: ``name``, ``summary``, ``config_class``, ``presets`` and the methods ``prepare``,
    ``build`` (training's, from ``training.api.Family``), ``load`` and ``evaluate``. The rest
    have defaults that do nothing or declare nothing.
    """

    summary: ClassVar[str]  # one line for --help
    presets: ClassVar[Mapping[str, dict[str, Any]]]  # named starting points of the config
    sample_flags: tuple[SampleFlag, ...] = ()  # the `genforge sample` flags its models take
    grid_caption: str = "samples"  # what the pictures in samples/ show
    exports: Mapping[str, Callable[[Model], Any]] = MappingProxyType({})  # part -> models.graphs graph
    cannot_export: str | None = None  # why `genforge export` refuses this family, if it does

    @abstractmethod
    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> Model:
        """A trained model rebuilt from a checkpoint alone, with only what it infers with (see ``Model``)."""

    @abstractmethod
    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, Any]:
        """What "how good is it?" means for this family (``score_generator`` for generators)."""

    def data_config(self, c: ckpt.Checkpoint) -> DataConfig:
        """The real data its samples are compared with (the prior's is its VQ-VAE's)."""
        return from_dict(DataConfig, c.config.get("data", {}))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Extra ``genforge train NAME`` flags (the prior's ``--vqvae``)."""

    def from_arguments(self, args: argparse.Namespace) -> dict[str, Any]:
        """Those flags -> config values."""
        return {}

    def resolve(self, preset: str | None = "default", config_file=None, sets=(), extra=None) -> Any:
        """defaults < preset < YAML file < --set overrides < explicit flags (``extra``)."""
        return resolve(self.config_class, self.presets, preset, config_file, sets, extra)


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


def family_of(path: str | Path) -> FamilySpec | None:
    """The family of the checkpoint ``path`` names, from its metadata alone (no tensors read);
    None when it cannot tell (``load`` then says why)."""
    folder = ckpt.find(path)
    try:
        kind = json.loads((folder / ckpt.META).read_text())["kind"] if folder is not None else None
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return FAMILIES.get(kind) if isinstance(kind, str) else None


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
    model: Sampler,
    n: int,
    seed: int = 0,
    batch_size: int = 500,
    class_probs: np.ndarray | None = None,
    reporter: Reporter = SILENT,
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
    for start in reporter.track(range(0, n, batch_size), "sampling"):
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


def score_generator(model: Sampler, ctx: EvalContext) -> dict[str, Any]:
    """Sample ``ctx.n`` images and score them against the reference: a generator's evaluation.

    For a class-conditional model scored with the dataset's own classifier, also how often the
    classifier finds the class that was asked for (``class_accuracy``, and its worst class). A
    model with sampling settings (``genforge tune``) names the ones it drew with (``sampling``).
    """
    hist = ctx.reference.class_hist
    class_probs = None if hist is None else np.asarray(hist, np.float64) / np.sum(hist)
    fake, speed, asked = generate(model, ctx.n, ctx.seed, class_probs=class_probs, reporter=ctx.reporter)
    feats, probs = extract(fake, ctx.extractor, reporter=ctx.reporter, desc="sample features")
    scores = evaluate_features(feats, probs, ctx.reference, images=fake)
    scores["sample_images_per_s"] = speed
    if isinstance(model, TunedSampling):
        scores["sampling"] = model.sampling_note()
    if asked is not None and probs is not None and probs.shape[1] == model.num_classes:
        hit = probs.argmax(axis=1) == asked
        scores["class_accuracy"] = float(hit.mean())
        scores["class_accuracy_min"] = float(min(hit[asked == k].mean() for k in np.unique(asked)))
    return scores
