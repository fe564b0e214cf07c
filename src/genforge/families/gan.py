"""The GAN family: a generator and a discriminator trained against each other.

The game min_G max_D E[log D(x)] + E[log(1 - D(G(z)))], played with the losses of ``losses.py``
(non-saturating by default), optional penalties (R1, lazily every few steps; WGAN-GP; path length
for generators with a w space), an EMA copy of the generator for sampling, discriminator
augmentation (DiffAugment, or ADA's adaptive probability), and optionally class labels
(``conditional: true``). The networks are DCGAN's here;
``families/stylegan2.py`` trains StyleGAN2's with the same trainer. Declared once, at the bottom.

Its config and presets live in ``gan_config.py``, its trainer (which StyleGAN2 and FastGAN
share) in ``gan_trainer.py``; here are the trained model rebuilt from a checkpoint and the family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.augment import default_mirror, stored_mirror
from genforge.config import fill_from_data
from genforge.data import fit_note, load_configured
from genforge.errors import GenforgeError
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer, GeneratorBuilder, Networks, dcgan_generator
from genforge.families.registry import (
    EvalContext,
    FamilySpec,
    Prepared,
    SampleFlag,
    count,
    register,
    score_generator,
)
from genforge.families.sampling import TunedSampling
from genforge.images import save_grid, to_uint8
from genforge.losses import GAN_LOSSES
from genforge.models.gan import nearest_resolution
from genforge.models.graphs import GeneratorGraph
from genforge.progress import SILENT, Reporter
from genforge.runfolder import RunFolder

# ---------------------------------------------------------------------------------------------
# A trained GAN, rebuilt from its checkpoint
# ---------------------------------------------------------------------------------------------


def truncated_normal(n: int, dim: int, truncation: float | None, generator: torch.Generator, device) -> torch.Tensor:
    """N(0, I) latents; with ``truncation`` t (> 0, checked by ``GANModel.check_options``),
    entries with |z| > t are redrawn (BigGAN's trick)."""
    z = torch.randn(n, dim, device=device, generator=generator)
    if truncation is None:
        return z
    for _ in range(1000):
        outside = z.abs() > truncation
        if not outside.any():
            break
        z = torch.where(outside, torch.randn(z.shape, device=device, generator=generator), z)
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b (B, D) at fractions t (K,) -> (B, K, D)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1)
    so = torch.sin(omega)
    t = t[None, :]  # (1, K)
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    return wa[..., None] * a[:, None] + wb[..., None] * b[:, None]


class GANModel(TunedSampling):
    """The sampling generator (EMA copy when trained with one) of a GAN checkpoint.

    ``truncation`` redraws DCGAN latents beyond that magnitude; a family whose generator has a
    w space (StyleGAN2) overrides ``_forward`` to pull w towards its mean instead. ``genforge
    tune`` chooses it by measurement (the run's sampling.json), as it chooses a prior's settings;
    ``sample`` and ``evaluate`` then use it unless one is given.
    """

    # What genforge tune tries, off first: fidelity bought with variety as t shrinks.
    TRUNCATIONS: tuple[float | None, ...] = (None, 2.0, 1.5, 1.0, 0.5)

    def __init__(
        self,
        c: ckpt.Checkpoint,
        device: torch.device,
        spec=None,
        networks: Networks | None = None,
        generator: GeneratorBuilder | None = None,
    ):
        """The sampling generator alone: G_ema when the run kept one, else G; no discriminator,
        no optimizer. ``generator`` builds G from the run config; without it, ``networks(cfg)[0]``
        (a D is built and dropped at once), and without either, DCGAN's G."""
        cfg = (spec or SPEC).config_of(c)
        if generator is None:
            generator = dcgan_generator if networks is None else (lambda cfg: networks(cfg)[0])
        # The weights come from the checkpoint: the initial draws must not move the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            net = generator(cfg).to(device)
        name = "G_ema" if cfg.optim.uses_ema else "G"  # the trainer's sampler
        ckpt.unpack_module(f"model.{name}", net, c.tensors)
        self.net = net.eval().requires_grad_(False)
        self.device, self.config, self.step = device, cfg, c.step
        self.num_classes = cfg.model.num_classes
        self.read_tuning(c.path)

    def sampling_space(self) -> dict[str, tuple]:
        return {"truncation": self.TRUNCATIONS}

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in options.items() if v is not None}
        _refuse({k: v for k, v in given.items() if k != "truncation"}, "a GAN")
        if "truncation" in given:
            self._check_truncation(given["truncation"])
        return given

    def _check_truncation(self, t) -> None:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise GenforgeError(f"truncation must be a positive number, got {t!r}")

    def _truncation(self, truncation: float | None, tuned: bool, others: dict[str, Any]) -> float | None:
        """The truncation a draw uses: the one given, else the run's tuned one (unless ``tuned`` is False)."""
        return self.sampling_options({"truncation": truncation, **others}, tuned).get("truncation")

    def _labels(self, class_label, n: int, generator: torch.Generator) -> torch.Tensor | None:
        if class_label is None:
            if self.num_classes:  # "any class": drawn uniformly
                return torch.randint(self.num_classes, (n,), device=self.device, generator=generator)
            return None
        if not self.num_classes:
            raise GenforgeError("a class was asked for, but this GAN was trained without labels (conditional: false)")
        labels = torch.as_tensor(class_label, dtype=torch.long, device=self.device).expand(n)
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise GenforgeError(f"class must be in 0..{self.num_classes - 1}, got {class_label}")
        return labels

    def _latents(self, n: int, truncation: float | None, generator: torch.Generator) -> torch.Tensor:
        return truncated_normal(n, self.config.model.z_dim, truncation, generator, self.device)

    def _forward(self, z, labels, truncation, generator) -> torch.Tensor:
        return self.net(z, labels, generator=generator).float()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator,
        truncation: float | None = None,
        class_label=None,
        tuned: bool = True,
        **others,
    ) -> torch.Tensor:
        truncation = self._truncation(truncation, tuned, others)
        z = self._latents(n, truncation, generator)
        labels = self._labels(class_label, n, generator)
        chunks = [labels[i : i + 256] if labels is not None else None for i in range(0, n, 256)]
        return torch.cat([self._forward(zc, yc, truncation, generator) for zc, yc in zip(z.split(256), chunks)])

    @torch.no_grad()
    def interpolate(
        self,
        rows: int,
        steps: int,
        generator: torch.Generator,
        truncation: float | None = None,
        class_label=None,
        tuned: bool = True,
    ) -> torch.Tensor:
        """``rows`` strips of ``steps`` images each, walking between two random latents."""
        if steps < 2:
            raise GenforgeError(f"interpolation needs at least 2 steps, got {steps}")
        truncation = self._truncation(truncation, tuned, {})
        dim = self.config.model.z_dim
        a, b = self._latents(rows, truncation, generator), self._latents(rows, truncation, generator)
        z = slerp(a, b, torch.linspace(0, 1, steps, device=self.device)).reshape(rows * steps, dim)
        labels = self._labels(class_label, rows, generator)
        labels = None if labels is None else labels.repeat_interleave(steps)
        return self._forward(z, labels, truncation, generator)


def _refuse(options: dict[str, Any], what: str) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise GenforgeError(
            f"sampling option '{given[0]}' does not apply to {what} (it takes: truncation, class_label)"
        )


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------


def fit_to_data(config, resolution: int, channels: int, num_classes: int = 0):
    """Fill the model's fields the data decides (a different value already set is an error)."""
    fill_from_data(config.model, "model", resolution=resolution, channels=channels, num_classes=num_classes)
    return config


def load_for(config, nearest: Callable[[int], int], reporter: Reporter = SILENT) -> Prepared:
    """The data of a GAN run, fitted to a resolution its networks support; fills the config."""
    asked = config.data
    data, config.data = load_configured(config.data, nearest=nearest, lazy=True, reporter=reporter)  # packed: on disk
    notes = [note] if (note := fit_note(asked, config.data)) else []
    num_classes = 0
    if config.conditional:
        if data.labels is None:
            raise GenforgeError(f"conditional: true needs class labels, and {config.data.source} has none")
        num_classes = data.num_classes
    fit_to_data(config, data.resolution, data.channels, num_classes)
    mirror_notes, decided = default_mirror(config.augment, labelled=data.labels is not None)
    notes += mirror_notes
    return Prepared(
        config,
        data,
        data.labels,
        num_classes=num_classes,
        data_config=config.data,
        notes=notes,
        mirror=config.augment.mirror,
        decided=decided,
    )


def prepare(config: GANRunConfig, reporter: Reporter = SILENT) -> Prepared:
    return load_for(config, nearest_resolution, reporter)


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
    return GANTrainer(prepared.config, device, dtype)


def class_grid(model, run_dir: Path, per_class: int = 10, seed: int = 0) -> Path | None:
    """``samples/classes.png``: one row per class, for a class-conditional model."""
    if not model.num_classes:
        return None
    g = torch.Generator(device=model.device).manual_seed(seed)
    rows = [to_uint8(model.sample(per_class, g, class_label=k)) for k in range(model.num_classes)]
    return save_grid(np.concatenate(rows), RunFolder(run_dir).class_grid, nrow=per_class)


def finish(run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter) -> None:
    """After training: the per-class grid of a conditional GAN (the report shows it)."""
    if prepared.config.model.num_classes:
        class_grid(SPEC.load(ckpt.load(run_dir, kind=SPEC.name, map_location=device), device), run_dir)
    return None


def evaluate(model: GANModel, ctx: EvalContext) -> dict[str, Any]:
    return score_generator(model, ctx)


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """genforge 0.1 GAN configs named widths `*_channels`. Runs with ADA from before ADA's own
    pipeline (no `augment.pipeline`) augmented with DiffAugment's ops. Runs from before
    `augment.mirror` trained without it (its default is now decided by the data)."""
    model = dict(config.get("model", {}))
    for old, new in (("g_channels", "g_width"), ("d_channels", "d_width"), ("max_channels", "max_width")):
        if old in model:
            model[new] = model.pop(old)
    config = {**config, "model": model}
    augment = config.get("augment")
    if isinstance(augment, dict) and augment.get("policy") == "ada" and "pipeline" not in augment:
        config["augment"] = augment = {**augment, "pipeline": "diffaugment"}
    config["augment"] = stored_mirror(augment)
    return config


# `genforge sample` flags; StyleGAN2 shares --interpolate and gives --truncation its own meaning.
INTERPOLATE = SampleFlag(
    "--interpolate", "interpolate", "--n strips walking between two latents", count(2), metavar="STEPS"
)
SAMPLE_FLAGS = (
    SampleFlag(
        "--truncation", "truncation", "redraw latent entries with |z| > T (BigGAN; off by default)", metavar="T"
    ),
    INTERPOLATE,
)


class GANFamily(FamilySpec):
    """The DCGAN family: its config, data, trainer and inference model are the functions above."""

    name = "gan"
    summary = "a GAN with DCGAN networks (losses: " + ", ".join(GAN_LOSSES) + "; DiffAugment / ADA)"
    config_class = GANRunConfig
    presets = GAN_PRESETS
    sample_flags = SAMPLE_FLAGS
    exports = {"generator": lambda model: GeneratorGraph(model.net, model.config.model.z_dim, model.num_classes)}

    def prepare(self, config: GANRunConfig, reporter: Reporter = SILENT) -> Prepared:
        return prepare(config, reporter)

    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
        return build(prepared, device, dtype)

    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> GANModel:
        return GANModel(checkpoint, device)

    def evaluate(self, model: GANModel, ctx: EvalContext) -> dict[str, Any]:
        return evaluate(model, ctx)

    def finish(self, run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter) -> None:
        return finish(run_dir, prepared, device, reporter)

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        return migrate(config)


SPEC = register(GANFamily())
