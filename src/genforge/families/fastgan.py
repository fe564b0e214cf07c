"""The FastGAN family: FastGAN's networks (``models/fastgan.py``), trained by the GAN family's trainer.

As the reference's train.py trains them: hinge loss with margins jittered in [0.8, 1] per logit,
the discriminator's reconstruction of the real images it sees (after augmentation) added to its
loss, DiffAugment (colour, translation, cutout) on reals and fakes alike, Adam at 0.0002 with
betas (0.5, 0.999) for both networks, and an EMA generator (decay 0.999) for sampling. What the
trainer shares with the other GAN families (checkpoints and resume, EMA, augmentation, DDP through
``step_module``, progress, sampling, evaluation, ONNX export) is ``GANTrainer``'s; only the
training step is FastGAN's own.

Deviation: the reconstruction loss is MSE against the box-downscaled real image, not LPIPS
(whose VGG weights and learned heads are downloads genforge does not make).
Deviation: the EMA warms up as the GAN trainer's does (decay min(0.999, (1 + n) / (10 + n)) at
step n); the reference averages at 0.999 from the first step.
Deviation: the reference's train.py draws its sample grids with the generator in training mode
(batch statistics); genforge samples in eval mode (running statistics), as for DCGAN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.augment import default_mirror, stored_mirror
from genforge.config import DataConfig, TrainConfig, check, non_negative
from genforge.data import fit_note, load_configured
from genforge.draws import rand
from genforge.errors import GenforgeError
from genforge.families.gan import GANModel, fit_to_data
from genforge.families.gan_config import AugmentConfig, GANOptimConfig
from genforge.families.gan_trainer import GANTrainer
from genforge.families.registry import EvalContext, FamilySpec, Prepared, register, score_generator
from genforge.losses import d_hinge_margins, fastgan_reconstruction
from genforge.models.fastgan import RESOLUTIONS, Discriminator, FastGANConfig, Generator, with_fixed_weights
from genforge.models.graphs import GeneratorGraph
from genforge.progress import SILENT, Reporter
from genforge.training.precision import autocast, update


@dataclass
class FastGANObjective:
    recon_weight: float = 1.0  # weight of the discriminator's reconstruction loss (0: off)
    margin_jitter: float = 0.2  # hinge margins drawn from [1 - jitter, 1] per logit (0: plain hinge)

    def __post_init__(self):
        non_negative(self, "recon_weight")
        check(0 <= self.margin_jitter < 1, "margin_jitter", "must be in [0, 1)", self.margin_jitter)


@dataclass
class FastGANRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: FastGANConfig = field(default_factory=FastGANConfig)
    objective: FastGANObjective = field(default_factory=FastGANObjective)
    optim: GANOptimConfig = field(default_factory=lambda: GANOptimConfig(loss="hinge", ema_decay=0.999))
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(policy="diffaugment"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64))

    def __post_init__(self):
        # What GANTrainer.train_step adds and FastGAN's own step does not: refused, not ignored.
        o = self.optim
        unsupported = {
            "optim.loss": o.loss != "hinge",
            "optim.d_steps": o.d_steps != 1,
            "optim.r1_gamma": o.r1_gamma != 0,
            "optim.mode_seeking": o.mode_seeking != 0,
        }
        for key, refused in unsupported.items():
            if refused:
                raise GenforgeError(f"{key} is not supported by fastgan (it trains with the hinge loss, one D step)")


FASTGAN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},  # CPU-sized widths (ngf 16, ndf 8, at most 256 wide), DiffAugment
    # The paper's networks: ngf = ndf = 64 uncapped, nz = 256, batch 8 (train.py's defaults). For a GPU.
    "paper": {"model": {"ngf": 64, "ndf": 64, "max_width": 1024, "z_dim": 256}, "train": {"batch_size": 8}},
    "ada": {"augment": {"policy": "ada", "p": 0.0, "speed": 100_000}},
    "no-augment": {"augment": {"policy": "none"}},
}


def networks(cfg: FastGANRunConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg.model), Discriminator(cfg.model)


def nearest_resolution(side: int) -> int:
    """The supported side closest to ``side`` (ties go up, so images are padded, not cut)."""
    return min(RESOLUTIONS, key=lambda r: (abs(r - side), -r))


class FastGANTrainer(GANTrainer):
    """``GANTrainer`` with FastGAN's step: D learns to tell reals from fakes and to reconstruct the
    reals it saw; G learns to raise D's logits on its fakes."""

    def __init__(self, cfg: FastGANRunConfig, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(cfg, device, dtype, networks=networks)

    def _margins(self, logits: torch.Tensor) -> torch.Tensor:
        """Hinge margins in [1 - jitter, 1], one per logit: this rank's rows of one global draw, so
        every rank's generator stays in step (``draws.Share``)."""
        jitter = self.cfg.objective.margin_jitter
        return 1 - jitter + jitter * rand(tuple(logits.shape), self.draws, logits.device)

    def _part(self) -> int:
        """Which quarter of D's 16x16 map (and of the image) is reconstructed this step; the same on every rank."""
        return int(torch.randint(4, (), generator=self.noise, device=self.noise.device))

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        b, obj = real.shape[0], self.cfg.objective
        self.D.requires_grad_(True)
        part = self._part()
        with autocast(self.device, self.dtype):
            fake = self.step_g(self._z(b), None, generator=self.draws)  # (B, C, R, R)
            seen = self._augment(real)  # the reals D judges and reconstructs
            real_logits, recons = self.step_d(seen, None, part=part)  # (B, 50), 3 x (B, C, s, s)
            fake_logits = self.step_d(self._augment(fake.detach()), None)
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        d_adv, parts = d_hinge_margins(real_logits, fake_logits, self._margins(real_logits), self._margins(fake_logits))
        recon, recon_parts = fastgan_reconstruction(recons, seen.detach(), part, obj.recon_weight)
        d_loss = d_adv + recon
        if self.ada is not None:
            self.ada.observe(real_logits)
        update(self.opt_d, self.scaler_d, d_loss)
        logs = {"d_loss": d_loss.detach(), **parts, **recon_parts}

        self.D.requires_grad_(False)  # G's update: D's weights need no gradient
        with autocast(self.device, self.dtype):
            g_logits = self.step_d(self._augment(fake), None).float()
        g_loss, parts = self.g_loss_fn(g_logits)
        update(self.opt_g, self.scaler_g, g_loss)
        logs.update(parts, g_loss=g_loss.detach())
        self.steps_done += 1
        if self.ada is not None:
            self.ada.update(self.cfg.train.batch_size)
        self._update_ema()
        return logs


def prepare(config: FastGANRunConfig, reporter: Reporter = SILENT) -> Prepared:
    """The data fitted to a side FastGAN supports (32..1024); labels are not used."""
    asked = config.data
    data, config.data = load_configured(config.data, nearest=nearest_resolution, lazy=True, reporter=reporter)
    notes = [note] if (note := fit_note(asked, config.data)) else []
    fit_to_data(config, data.resolution, data.channels)
    mirror_notes, decided = default_mirror(config.augment, labelled=data.labels is not None)
    notes += mirror_notes
    return Prepared(
        config,
        data,
        None,
        num_classes=0,
        data_config=config.data,
        notes=notes,
        mirror=config.augment.mirror,
        decided=decided,
    )


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> FastGANTrainer:
    return FastGANTrainer(prepared.config, device, dtype)


class FastGANModel(GANModel):
    """A trained FastGAN's sampling generator (the EMA copy when trained with one). Samples draw the
    injected noise from the caller's generator; the exported graph uses the stored noise images."""

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        super().__init__(c, device, spec=SPEC, networks=networks, generator=lambda cfg: Generator(cfg.model))


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """Runs from before FastGAN read `augment.mirror` trained without it."""
    return {**config, "augment": stored_mirror(config.get("augment"))}


class FastGANFamily(FamilySpec):
    """The FastGAN family: the functions above, scored as a generator."""

    name = "fastgan"
    summary = "a FastGAN (skip-layer excitation, D with self-supervised decoders; hinge, DiffAugment, EMA)"
    config_class = FastGANRunConfig
    presets = FASTGAN_PRESETS
    exports = {  # the stored noise images (noise_mode const), spectral norm's weights fixed
        "generator": lambda model: GeneratorGraph(
            with_fixed_weights(model.net), model.config.model.z_dim, noise_mode="const"
        )
    }

    def prepare(self, config: FastGANRunConfig, reporter: Reporter = SILENT) -> Prepared:
        return prepare(config, reporter)

    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> FastGANTrainer:
        return build(prepared, device, dtype)

    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> FastGANModel:
        return FastGANModel(checkpoint, device)

    def evaluate(self, model: FastGANModel, ctx: EvalContext) -> dict[str, Any]:
        return score_generator(model, ctx)

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        return migrate(config)


SPEC = register(FastGANFamily())
