"""The StyleGAN2 family: StyleGAN2's generator and discriminator, trained by the GAN family's trainer.

Mapping network, modulated/demodulated convolutions with noise inputs, a skip generator and a
residual discriminator with minibatch standard deviation (``models/stylegan2.py``), trained with
stylegan2-ada-pytorch's loss and schedule (training/loss.py, training_loop.py): non-saturating
loss; lazy R1 every 16 steps and path length regularisation (weight 2) every 4, each a step of its
own with Adam's rate and betas shrunk by N / (N + 1); Adam (0, 0.99); style mixing 0.9; an EMA
generator whose half-life is counted in images (ema_kimg, with ramp-up); ADA's adaptive
augmentation; in-training samples with constant noise, as ``evaluate`` makes them.

Sizes: the default is CPU-sized (``StyleGAN2Config``'s widths, 128-d z and w, 2 mapping layers,
batch 64, R1 gamma 0.01, lr 0.0025, ema_kimg 20) and takes the reference's ``auto`` sizes on CUDA
(``scale: by-device``); presets ``auto``, ``paper256``, ``paper512``, ``paper1024`` and ``cifar``
carry the reference's train.py cfg_specs in our keys. Deviations: the discriminator is always
residual (the reference's ``cifar`` uses 'orig'); ADA's ops are ours (``augment.py``); no fp16
layers or conv clamping (precision is chosen by ``train.precision``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, TrainConfig, from_dict, merge, one_of, to_dict
from genforge.errors import GenforgeError
from genforge.families.gan import INTERPOLATE, GANModel, class_grid, load_for
from genforge.families.gan import migrate as gan_migrate
from genforge.families.gan_config import AugmentConfig, GANOptimConfig, check_penalties
from genforge.families.gan_trainer import GANTrainer
from genforge.families.registry import EvalContext, FamilySpec, Prepared, SampleFlag, register, score_generator
from genforge.models.graphs import GeneratorGraph
from genforge.models.stylegan2 import RESOLUTIONS, Discriminator, Generator, StyleGAN2Config, widths
from genforge.progress import SILENT, Reporter
from genforge.training.devices import pick_device
from genforge.training.distributed import from_environment

# fixed: the config's values as they are; auto: the reference's `auto` sizes for the data's
# resolution, filled in by `prepare`; by-device: auto on CUDA, fixed elsewhere (decided by `prepare`).
SCALES = ("fixed", "auto", "by-device")
SAMPLE_OPTIONS = {"noise_mode": "const"}  # in-training samples are made as `evaluate` makes them


def _optim() -> GANOptimConfig:
    # stylegan2-ada-pytorch's loss and optimizers: lr 0.0025, betas (0, 0.99), R1 every 16
    # minibatches (gamma 0.01: its `cifar` value; its `auto` formula gives 0.0032 at 32x32 and
    # 0.0128 at 64x64, batch 64), path length weight 2 every 4. EMA: 20 kimg, the reference's `auto`
    # value at batch 64 (batch * 10 / 32), ramped up over the first images (0.05 of those seen):
    # within a CPU budget of < 400k images the ramp-up sets it.
    return GANOptimConfig(
        lr_g=0.0025,
        lr_d=0.0025,
        beta1=0.0,
        beta2=0.99,
        r1_gamma=0.01,
        r1_interval=16,
        pl_weight=2.0,
        pl_interval=4,
        ema_kimg=20.0,
        ema_rampup=0.05,
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
    scale: str = "fixed"  # fixed | auto | by-device (see SCALES); a run's config records fixed or auto

    def __post_init__(self):
        one_of(self, "scale", SCALES)
        check_penalties(self)


def reference_spec(
    batch: int, mbstd: int, fmaps: float, lr: float, gamma: float, ema: float, ramp: float | None, mapping: int
) -> dict[str, Any]:
    """One of stylegan2-ada-pytorch's train.py cfg_specs (mb, mbstd, fmaps, lrate, gamma, ema, ramp,
    map) in our keys: z and w 512-d, widths channel_base = fmaps * 32768 over the resolution, capped
    at 512; ADA moves p by 1 in 500k images (ada_kimg 500)."""
    return {
        "model": {
            "z_dim": 512,
            "w_dim": 512,
            "mapping_layers": mapping,
            "channel_base": int(fmaps * 32768),
            "max_width": 512,
            "mbstd_group": mbstd,
        },
        "optim": {"lr_g": lr, "lr_d": lr, "r1_gamma": gamma, "ema_kimg": ema, "ema_rampup": ramp or 0.0},
        "augment": {"speed": 500_000},
        "train": {"batch_size": batch},
    }


def auto_spec(resolution: int, gpus: int) -> dict[str, Any]:
    """The reference's `auto` spec for a resolution and number of GPUs (train.py, cfg == 'auto')."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return reference_spec(
        batch=batch,
        mbstd=min(batch // gpus, 4),
        fmaps=1 if resolution >= 512 else 0.5,
        lr=0.002 if resolution >= 1024 else 0.0025,
        gamma=0.0002 * resolution**2 / batch,
        ema=batch * 10 / 32,
        ramp=0.05,
        mapping=2,
    )


# The reference's cifar spec also turns off path length regularisation and style mixing.
_CIFAR = merge(
    reference_spec(batch=64, mbstd=32, fmaps=1, lr=0.0025, gamma=0.01, ema=500, ramp=0.05, mapping=2),
    {"model": {"style_mixing": 0.0}, "optim": {"pl_weight": 0.0}},
)

STYLEGAN2_PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized on CPU (and MPS), the reference's `auto` sizes on CUDA; ADA on
    "default": {"scale": "by-device"},
    "no-augment": {"scale": "by-device", "augment": {"policy": "none"}},
    "diffaugment": {"scale": "by-device", "augment": {"policy": "diffaugment", "p": 1.0}},
    "conditional": {"scale": "by-device", "conditional": True},
    "cpu": {},  # the CPU-sized defaults on any device
    "auto": {"scale": "auto"},  # the reference's `auto` sizes for the data's resolution, on any device
    # stylegan2-ada-pytorch's train.py cfg_specs, for the resolutions they are named after
    "paper256": reference_spec(batch=64, mbstd=8, fmaps=0.5, lr=0.0025, gamma=1, ema=20, ramp=None, mapping=8),
    "paper512": reference_spec(batch=64, mbstd=8, fmaps=1, lr=0.0025, gamma=0.5, ema=20, ramp=None, mapping=8),
    "paper1024": reference_spec(batch=32, mbstd=4, fmaps=1, lr=0.002, gamma=2, ema=10, ramp=None, mapping=8),
    "cifar": _CIFAR,
}


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(prefix + key, value)]
    return out


def _get(values: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        values = values[key]
    return values


def _summary(config: StyleGAN2RunConfig) -> str:
    m, o = config.model, config.optim
    w = widths(m)
    ema = f"ema_kimg {o.ema_kimg:g} (ramp-up {o.ema_rampup:g})" if o.ema_kimg else f"ema_decay {o.ema_decay:g}"
    return (
        f"batch {config.train.batch_size}, widths {w[m.resolution]}..{w[4]}, z/w {m.z_dim}/{m.w_dim}, "
        f"{m.mapping_layers} mapping layers, mbstd group {m.mbstd_group}, lr {o.lr_g:g}, "
        f"r1_gamma {o.r1_gamma:g}, pl_weight {o.pl_weight:g}, {ema}"
    )


def apply_scale(config: StyleGAN2RunConfig, device_type: str, gpus: int) -> tuple[StyleGAN2RunConfig, str]:
    """The config with its ``scale`` decided (by-device -> auto on CUDA, fixed elsewhere) and, for
    auto, the reference's auto values for the (already filled) resolution put in each key that
    still holds its default value (also where the config names the key, with that same value); a
    key holding another value keeps it. Returns (config, one line saying what was chosen)."""
    scale = config.scale
    if scale == "by-device":
        scale = "auto" if device_type == "cuda" else "fixed"
    if scale == "fixed":
        resolved = from_dict(StyleGAN2RunConfig, {**to_dict(config), "scale": "fixed"})
        what = "as configured (scale: fixed)"
        if config.scale == "by-device":
            what = f"CPU-sized on {device_type} (on CUDA: the reference's auto sizes; --preset auto takes them here)"
        return resolved, f"stylegan2 {what}: {_summary(resolved)}"
    resolution = config.model.resolution
    current, defaults = to_dict(config), to_dict(StyleGAN2RunConfig())
    values, kept = {**current, "scale": "auto"}, []
    for key, value in _leaves(auto_spec(resolution, gpus)):
        if _get(current, key) == _get(defaults, key):
            section, name = key.split(".")
            values[section] = {**values[section], name: value}
        else:
            kept.append(key)
    resolved = from_dict(StyleGAN2RunConfig, values)
    where = f"{resolution}x{resolution} and {gpus} GPU{'s' if gpus > 1 else ''}"
    note = f"stylegan2 with the reference's auto sizes for {where}: {_summary(resolved)}"
    return resolved, note + (f"; kept from your config: {', '.join(kept)}" if kept else "")


def networks(cfg: StyleGAN2RunConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg.model), Discriminator(cfg.model)


def nearest_resolution(side: int) -> int:
    """The power of two closest to ``side`` (ties go up, so images are padded, not cut)."""
    return min(RESOLUTIONS, key=lambda r: (abs(r - side), -r))


def prepare(config: StyleGAN2RunConfig, reporter: Reporter = SILENT) -> Prepared:
    prepared = load_for(config, nearest_resolution, reporter)
    device = pick_device(prepared.config.train.device)
    prepared.config, note = apply_scale(prepared.config, device.type, from_environment().size)
    prepared.notes.append(note)
    return prepared


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
    return GANTrainer(prepared.config, device, dtype, networks=networks, sample_options=SAMPLE_OPTIONS)


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """A run from before path length regularisation and the EMA by images trained without the one
    and with a per-step EMA: its config reads so (the keys it lacks would switch them on). The GAN
    family's migration first: runs from before ADA's own pipeline keep DiffAugment's ops."""
    config = gan_migrate(config)
    optim = dict(config.get("optim", {}))
    if "pl_weight" not in optim:
        optim.setdefault("pl_weight", 0.0)
        optim.setdefault("ema_kimg", 0.0)
        optim.setdefault("ema_rampup", 0.0)
    return {**config, "optim": optim}


class StyleGAN2Model(GANModel):
    """A trained StyleGAN2: ``truncation`` is psi, pulling each w towards the mean w (psi 1: none)."""

    TRUNCATIONS = (None, 0.9, 0.8, 0.7, 0.5)  # psi; None is 1

    def _check_truncation(self, psi) -> None:
        # psi 0 gives the mean image; above 1 extrapolates away from it (allowed, as in the reference)
        if not (isinstance(psi, (int, float)) and math.isfinite(psi) and psi >= 0):
            raise GenforgeError(f"truncation (psi) must be a finite number >= 0, got {psi!r}")

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        super().__init__(c, device, spec=SPEC, networks=networks, generator=lambda cfg: Generator(cfg.model))

    def _latents(self, n: int, truncation: float | None, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.model.z_dim, device=self.device, generator=generator)

    def _forward(self, z, labels, truncation, generator) -> torch.Tensor:
        psi = 1.0 if truncation is None else truncation
        return self.net(z, labels, truncation_psi=psi, noise_mode="const", generator=generator).float()


def finish(run_dir, prepared: Prepared, device: torch.device, reporter: Reporter) -> None:
    if prepared.config.model.num_classes:
        class_grid(StyleGAN2Model(ckpt.load(run_dir, kind=SPEC.name, map_location=device), device), run_dir)
    return None


class StyleGAN2Family(FamilySpec):
    """The StyleGAN2 family: the GAN family's data and trainer with StyleGAN2's networks."""

    name = "stylegan2"
    summary = "a StyleGAN2 (mapping network, modulated convolutions, residual D; lazy R1, ADA, EMA)"
    config_class = StyleGAN2RunConfig
    presets = STYLEGAN2_PRESETS
    sample_flags = (
        SampleFlag("--truncation", "truncation", "psi, pulls each w towards the mean w (1: off)", metavar="PSI"),
        INTERPOLATE,
    )
    exports = {
        "generator": lambda model: GeneratorGraph(
            model.net, model.config.model.z_dim, model.num_classes, noise_mode="const"
        )
    }

    def prepare(self, config: StyleGAN2RunConfig, reporter: Reporter = SILENT) -> Prepared:
        return prepare(config, reporter)

    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
        return build(prepared, device, dtype)

    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> StyleGAN2Model:
        return StyleGAN2Model(checkpoint, device)

    def evaluate(self, model: StyleGAN2Model, ctx: EvalContext) -> dict[str, Any]:
        return score_generator(model, ctx)

    def finish(self, run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter) -> None:
        return finish(run_dir, prepared, device, reporter)

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        return migrate(config)


SPEC = register(StyleGAN2Family())
