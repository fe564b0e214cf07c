"""The StyleGAN2 family: StyleGAN2's generator and discriminator, trained by the GAN family's trainer.

Mapping network, modulated/demodulated convolutions with noise inputs, a skip generator and a
residual discriminator with minibatch standard deviation (``models/stylegan2.py``), trained as
StyleGAN2-ADA trains its small-data configurations: non-saturating loss, lazy R1 every 16 steps,
Adam (0, 0.99) at 0.0025, an EMA generator, style mixing, and ADA's adaptive augmentation. Path
length regularisation is left out, as StyleGAN2-ADA's own CIFAR configuration leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, TrainConfig
from genforge.errors import GenforgeError
from genforge.families.gan import (
    AugmentConfig,
    GANModel,
    GANOptimConfig,
    GANTrainer,
    check_penalties,
    class_grid,
    load_for,
)
from genforge.families.registry import FamilySpec, Prepared, register, score_generator
from genforge.models.graphs import GeneratorGraph
from genforge.models.stylegan2 import RESOLUTIONS, Discriminator, Generator, StyleGAN2Config


def _optim() -> GANOptimConfig:
    # StyleGAN2-ADA's small-data settings (its `cifar` configuration: lr 0.0025, betas (0, 0.99),
    # gamma 0.01, R1 every 16 minibatches).
    return GANOptimConfig(
        lr_g=0.0025, lr_d=0.0025, beta1=0.0, beta2=0.99, r1_gamma=0.01, r1_interval=16, ema_decay=0.999
    )


@dataclass
class StyleGAN2RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    conditional: bool = False  # class-conditional mapping network and projection discriminator
    model: StyleGAN2Config = field(default_factory=StyleGAN2Config)
    optim: GANOptimConfig = field(default_factory=_optim)
    # ADA, responding within a CPU budget's images (see the GAN family's `ada` preset)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(policy="ada", p=0.0, speed=100_000))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64))

    def __post_init__(self):
        check_penalties(self)


STYLEGAN2_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},  # ADA on
    "no-augment": {"augment": {"policy": "none"}},
    "diffaugment": {"augment": {"policy": "diffaugment", "p": 1.0}},
    "conditional": {"conditional": True},
}


def networks(cfg: StyleGAN2RunConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg.model), Discriminator(cfg.model)


def nearest_resolution(side: int) -> int:
    """The power of two closest to ``side`` (ties go up, so images are padded, not cut)."""
    return min(RESOLUTIONS, key=lambda r: (abs(r - side), -r))


def prepare(config: StyleGAN2RunConfig, progress: bool = True) -> Prepared:
    return load_for(config, nearest_resolution, progress)


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
    return GANTrainer(prepared.config, device, dtype, networks=networks)


class StyleGAN2Model(GANModel):
    """A trained StyleGAN2: ``truncation`` is psi, pulling each w towards the mean w (psi 1: none)."""

    TRUNCATIONS = (None, 0.9, 0.8, 0.7, 0.5)  # psi; None is 1

    def _check_truncation(self, psi) -> None:
        # psi 0 gives the mean image; above 1 extrapolates away from it (allowed, as in the reference)
        if not (isinstance(psi, (int, float)) and math.isfinite(psi) and psi >= 0):
            raise GenforgeError(f"truncation (psi) must be a finite number >= 0, got {psi!r}")

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        super().__init__(c, device, spec=SPEC, networks=networks)

    def _latents(self, n: int, truncation: float | None, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.model.z_dim, device=self.device, generator=generator)

    def _forward(self, z, labels, truncation, generator) -> torch.Tensor:
        psi = 1.0 if truncation is None else truncation
        return self.net(z, labels, truncation_psi=psi, noise_mode="const", generator=generator).float()


def finish(run_dir, prepared: Prepared, device: torch.device, progress: bool) -> None:
    if prepared.config.model.num_classes:
        class_grid(StyleGAN2Model(ckpt.load(run_dir, kind=SPEC.name, map_location=device), device), run_dir)
    return None


SPEC = register(
    FamilySpec(
        name="stylegan2",
        summary="a StyleGAN2 (mapping network, modulated convolutions, residual D; lazy R1, ADA, EMA)",
        config_class=StyleGAN2RunConfig,
        presets=STYLEGAN2_PRESETS,
        prepare=prepare,
        build=build,
        load=StyleGAN2Model,
        evaluate=score_generator,
        finish=finish,
        exports={
            "generator": lambda model: GeneratorGraph(
                model.net, model.config.model.z_dim, model.num_classes, noise_mode="const"
            )
        },
    )
)
