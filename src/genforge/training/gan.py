"""The GAN family: its run config, presets and training step."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from genforge.config import DataConfig, TrainConfig, fill_from_data, fraction, non_negative, positive
from genforge.errors import GenforgeError
from genforge.losses import GAN_LOSSES, gradient_penalty, r1_penalty
from genforge.models.gan import DCGANConfig, Discriminator, Generator
from genforge.training.device import autocast


@dataclass
class GANOptimConfig:
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # a different rate for D is the two time-scale update rule (TTUR)
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update
    r1_gamma: float = 0.0  # R1 penalty weight on real data (0 = off)
    gp_weight: float = 10.0  # gradient penalty weight, used by wgan-gp
    ema_decay: float = 0.0  # EMA of the generator's weights for sampling (0 = off)
    ema_start: int = 0  # steps before the EMA starts averaging (it copies until then)

    def __post_init__(self):
        if self.loss not in GAN_LOSSES:
            raise GenforgeError(f"optim.loss must be one of {', '.join(GAN_LOSSES)}, got {self.loss!r}")
        positive(self, "lr_g", "lr_d", "d_steps")
        fraction(self, "beta1", "beta2", "ema_decay")
        non_negative(self, "r1_gamma", "gp_weight", "ema_start")


@dataclass
class GANRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: DCGANConfig = field(default_factory=DCGANConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.optim.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise GenforgeError(
                "optim.loss wgan-gp needs a critic without batch norm: set model.d_norm=none or spectral"
            )


# Named starting points; `genforge train gan --preset NAME`. Values overlay the defaults above.
GAN_PRESETS: dict[str, dict[str, Any]] = {
    # The founding document's DCGAN as the paper trains it: fp32, non-saturating loss, Adam 2e-4/0.5.
    "dcgan": {"train": {"precision": "fp32", "channels_last": False, "batch_size": 128}},
    # genforge's default: the same networks with the measures that pay off on small budgets.
    "default": {"optim": {"ema_decay": 0.999}, "train": {"batch_size": 128}},
    # Hinge loss + spectral-norm discriminator + TTUR (Miyato et al. 2018; Heusel et al. 2017).
    "hinge-sn": {
        "model": {"d_norm": "spectral"},
        "optim": {"loss": "hinge", "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "ema_decay": 0.999},
    },
    "wgan-gp": {
        "model": {"d_norm": "none"},
        "optim": {"loss": "wgan-gp", "d_steps": 5, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9},
    },
}


class GANFamily:
    """Generator, discriminator, optional EMA generator and their optimizers, over one device."""

    kind = "gan"

    def __init__(self, cfg: GANRunConfig, device: torch.device, dtype: torch.dtype = torch.float32):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        m, o = cfg.model, cfg.optim
        assert m.resolution and m.channels, "model.resolution/channels must be filled in from the data"
        torch.manual_seed(cfg.train.seed)  # weight init is part of what the seed fixes
        self.G = Generator(m).to(device)
        self.D = Discriminator(m).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if o.ema_decay > 0 else None
        if cfg.train.channels_last:
            for net in (self.G, self.D, self.G_ema):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[o.loss]
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.steps_done = 0
        self.step_g = torch.compile(self.G) if cfg.train.compile else self.G
        self.step_d = torch.compile(self.D) if cfg.train.compile else self.D

    # -- the Family protocol ----------------------------------------------------------------

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"G": self.G, "D": self.D}
        if self.G_ema is not None:
            mods["G_ema"] = self.G_ema
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"steps_done": self.steps_done}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        b = real.shape[0]
        logs: dict[str, torch.Tensor] = {}
        self.D.requires_grad_(True)
        for _ in range(o.d_steps):
            z = torch.randn(b, self.cfg.model.z_dim, device=self.device, generator=self.noise)
            with autocast(self.device, self.dtype):
                fake = self.step_g(z)
            if o.r1_gamma > 0:
                real = real.detach().requires_grad_(True)
            with autocast(self.device, self.dtype):
                real_logits = self.step_d(real).float()
                fake_logits = self.step_d(fake.detach()).float()
            d_loss, parts = self.d_loss_fn(real_logits, fake_logits)
            if o.r1_gamma > 0:
                penalty, p = r1_penalty(real, real_logits, o.r1_gamma)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            if o.loss == "wgan-gp":
                penalty, p = gradient_penalty(lambda t: self._d_float(t), real, fake, o.gp_weight, self.noise)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        logs["d_loss"] = d_loss.detach()
        logs.update(parts)

        # Generator: reuse the last fake batch; D's weights need no gradient for this update.
        self.D.requires_grad_(False)
        with autocast(self.device, self.dtype):
            g_logits = self.step_d(fake).float()
        g_loss, parts = self.g_loss_fn(g_logits)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        logs["g_loss"] = g_loss.detach()
        self.steps_done += 1
        self._update_ema()
        return logs

    def _d_float(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.step_d(x).float()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): early averages
        # would otherwise be dominated by the random initial weights for thousands of steps.
        n = self.steps_done - self.cfg.optim.ema_start
        decay = min(self.cfg.optim.ema_decay, (1 + n) / (10 + n)) if n > 0 else 0.0
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for eb, b in zip(self.G_ema.buffers(), self.G.buffers()):
            eb.copy_(b)

    @property
    def sampler(self) -> Generator:
        """The generator used for sampling: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)
        net = self.sampler
        was_training = net.training
        net.eval()
        out = net(z).float()
        net.train(was_training)
        return out


def build_config(cfg: GANRunConfig, resolution: int, channels: int) -> GANRunConfig:
    """Fill the model's resolution/channels from the data (a no-op when already set and equal)."""
    fill_from_data(cfg.model, "model", resolution=resolution, channels=channels)
    return cfg
