"""The VQ-VAE family: run config, presets and training step (optionally with a patch GAN)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genforge.config import DataConfig, TrainConfig, fill_from_data, fraction, non_negative, positive
from genforge.errors import GenforgeError
from genforge.losses import RECONSTRUCTION_LOSSES, adaptive_weight, d_hinge, g_hinge, vqvae_loss
from genforge.models.patchgan import PatchGAN, PatchGANConfig
from genforge.models.quantizers import CodebookHealth
from genforge.models.vqvae import VQVAE, VQVAEConfig
from genforge.training.device import autocast


@dataclass
class VQVAEOptimConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99
    recon_loss: str = "mse"  # mse | l1
    # The bridge to the GAN family: a patch discriminator on reconstructions (VQGAN, Esser et al. 2021).
    disc_weight: float = 0.0  # 0 = no adversarial loss
    disc_start: int = 2000  # steps of plain reconstruction before the discriminator joins
    lr_d: float = 4e-4
    health_window: int = 100  # batches over which codebook usage/perplexity are counted

    def __post_init__(self):
        positive(self, "lr", "lr_d", "health_window")
        fraction(self, "beta1", "beta2")
        non_negative(self, "disc_weight", "disc_start")
        if self.recon_loss not in RECONSTRUCTION_LOSSES:
            raise GenforgeError(
                f"optim.recon_loss must be one of {', '.join(RECONSTRUCTION_LOSSES)}, got {self.recon_loss!r}"
            )


@dataclass
class VQVAERunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    discriminator: PatchGANConfig = field(default_factory=PatchGANConfig)
    optim: VQVAEOptimConfig = field(default_factory=VQVAEOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    # EMA codebook, k-means init and dead-code restarts: the measures against codebook collapse.
    "default": {"train": {"batch_size": 64}},
    # The VQ-VAE paper's quantizer with none of them: shows what collapse looks like.
    "plain-vq": {"model": {"quantizer": {"ema": False, "kmeans_init": False, "restart_after": 0}}},
    "fsq": {"model": {"quantizer": {"kind": "fsq"}}},
    # VQGAN-style: reconstructions also judged by a patch discriminator after a warm-up.
    "vqgan": {"optim": {"disc_weight": 0.1, "disc_start": 1000, "recon_loss": "l1"}},
}


class VQVAEFamily:
    kind = "vqvae"

    def __init__(
        self,
        cfg: VQVAERunConfig,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        grid_images: torch.Tensor | None = None,
    ):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        torch.manual_seed(cfg.train.seed)
        o = cfg.optim
        self.model = VQVAE(cfg.model).to(device)
        self.disc = PatchGAN(cfg.discriminator).to(device) if o.disc_weight > 0 else None
        if cfg.train.channels_last:
            for net in (self.model, self.disc):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = (
            torch.optim.Adam(self.disc.parameters(), lr=o.lr_d, betas=(0.5, 0.9)) if self.disc is not None else None
        )
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.health = CodebookHealth(self.model.num_codes, o.health_window)
        self.steps_done = 0
        # Sample grids for a VQ-VAE are originals beside their reconstructions.
        self.grid_images = grid_images

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"vqvae": self.model}
        if self.disc is not None:
            mods["disc"] = self.disc
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"vqvae": self.opt}
        if self.opt_d is not None:
            opts["disc"] = self.opt_d
        return opts

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"health_counts": self.health.counts}, {
            "steps_done": self.steps_done,
            "health_batches": self.health.batches,
        }

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
        if tensors["health_counts"].shape != self.health.counts.shape:
            raise GenforgeError("checkpoint's codebook-health window does not match optim.health_window")
        self.health.counts.copy_(tensors["health_counts"])
        self.health.batches = int(state["health_batches"])

    def log_extras(self) -> dict[str, float]:
        return self.health.summary()

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        with autocast(self.device, self.dtype):
            recon, q = self.model(x)
        loss, parts = vqvae_loss(x, recon, q.loss, q.parts, recon_kind=o.recon_loss)
        adversarial = self.disc is not None and self.steps_done >= o.disc_start
        if adversarial:
            self.disc.requires_grad_(False)
            with autocast(self.device, self.dtype):
                g_adv, _ = g_hinge(self.disc(recon).float())
            weight = o.disc_weight * adaptive_weight(loss, g_adv, self.model.decoder.last_layer.weight)
            loss = loss + weight * g_adv
            parts = {**parts, "g_adv": g_adv.detach(), "adv_weight": weight}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if adversarial:
            self.disc.requires_grad_(True)
            with autocast(self.device, self.dtype):
                real_logits, fake_logits = self.disc(x).float(), self.disc(recon.detach()).float()
            d_loss, d_parts = d_hinge(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            parts = {**parts, "d_loss": d_loss.detach()}
        self.health.update(q.indices)
        self.steps_done += 1
        return {"loss": loss.detach(), **parts}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        out = torch.cat([self.model(chunk)[0].float().clamp(-1, 1) for chunk in x.split(256)])
        self.model.train(was)
        return out

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Originals and reconstructions interleaved column-wise: pairs side by side."""
        assert self.grid_images is not None, "VQVAEFamily needs grid_images to draw sample grids"
        half = max(1, n // 2)
        x = self.grid_images[:half].to(self.device)
        recon = self.reconstruct(x)
        return torch.stack([x, recon], 1).flatten(0, 1)  # (2*half, C, H, W): original, recon, ...


def build_config(cfg: VQVAERunConfig, resolution: int, channels: int) -> VQVAERunConfig:
    """Fill the model's resolution/channels from the data."""
    fill_from_data(cfg.model, "model", resolution=resolution, in_channels=channels)
    fill_from_data(cfg.discriminator, "discriminator", in_channels=channels)
    return cfg
