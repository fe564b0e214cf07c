"""The GAN family: a generator and a discriminator trained against each other.

The game min_G max_D E[log D(x)] + E[log(1 - D(G(z)))], played with the losses of ``losses.py``
(non-saturating by default), optional penalties (R1, WGAN-GP), an EMA copy of the generator for
sampling, and optionally class labels (``conditional: true``). Declared once, at the bottom.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, TrainConfig, fill_from_data, fraction, non_negative, one_of, positive
from genforge.data import load_configured
from genforge.errors import GenforgeError
from genforge.families.registry import EvalContext, FamilySpec, Prepared, register, score_generator
from genforge.losses import GAN_LOSSES, gradient_penalty, r1_penalty
from genforge.models.gan import DCGANConfig, Discriminator, Generator, nearest_resolution
from genforge.training.precision import autocast, grad_scaler


@dataclass
class GANOptimConfig:
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # a different rate for D is the two time-scale update rule (TTUR)
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update, each on its own real batch
    r1_gamma: float = 0.0  # R1 penalty weight on real data (0 = off)
    gp_weight: float = 10.0  # gradient penalty weight, used by wgan-gp
    ema_decay: float = 0.0  # EMA of the generator's weights for sampling (0 = off)
    ema_start: int = 0  # steps before the EMA starts averaging (it copies until then)

    def __post_init__(self):
        one_of(self, "loss", GAN_LOSSES)
        positive(self, "lr_g", "lr_d", "d_steps")
        fraction(self, "beta1", "beta2", "ema_decay")
        non_negative(self, "r1_gamma", "gp_weight", "ema_start")


@dataclass
class GANRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    conditional: bool = False  # train on the data's class labels: `genforge sample --class C`
    model: DCGANConfig = field(default_factory=DCGANConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.optim.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise GenforgeError(
                "optim.loss wgan-gp needs a critic without batch norm: set model.d_norm=none or spectral"
            )
        # R1 penalises each real sample's own gradient; batch norm makes D(x_i) depend on the
        # rest of the batch, so the penalty would not be the per-sample quantity it claims to be.
        if self.optim.r1_gamma > 0 and self.model.d_norm == "batch":
            raise GenforgeError(
                "optim.r1_gamma needs a discriminator without batch norm (R1 is a per-sample penalty and "
                "batch norm mixes the samples of a batch): set model.d_norm=spectral or none"
            )


# Named starting points; `genforge train gan --preset NAME`. Values overlay the defaults above.
GAN_PRESETS: dict[str, dict[str, Any]] = {
    # DCGAN as the paper trains it: fp32, non-saturating loss, Adam 2e-4/0.5, no EMA.
    "dcgan": {"train": {"precision": "fp32", "channels_last": False, "batch_size": 128}},
    # genforge's default: the same networks with the measures that pay off on small budgets.
    "default": {"optim": {"ema_decay": 0.999}, "train": {"batch_size": 128}},
    # The default, conditioned on the data's classes (projection discriminator).
    "conditional": {"conditional": True, "optim": {"ema_decay": 0.999}, "train": {"batch_size": 128}},
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


class GANTrainer:
    """Generator, discriminator, optional EMA generator and their optimizers, over one device."""

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
        self.scaler_g, self.scaler_d = grad_scaler(device, dtype), grad_scaler(device, dtype)
        self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[o.loss]
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.steps_done = 0
        # Penalties differentiate D's gradient again (double backward), which a compiled module
        # cannot do: they always run through the eager D; the plain losses use the compiled one.
        self.step_g = torch.compile(self.G) if cfg.train.compile else self.G
        self.step_d = torch.compile(self.D) if cfg.train.compile else self.D
        # Each discriminator update sees its own real batch: the loop hands over d_steps of them.
        self.batches_per_step = o.d_steps

    # -- what the training loop calls ---------------------------------------------------------

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"G": self.G, "D": self.D}
        if self.G_ema is not None:
            mods["G_ema"] = self.G_ema
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        state: dict[str, Any] = {"steps_done": self.steps_done}
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                state[name] = scaler.state_dict()
        return {}, state

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                scaler.load_state_dict(state[name])

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        b = real.shape[0] // self.batches_per_step
        logs: dict[str, torch.Tensor] = {}
        self.D.requires_grad_(True)
        for i in range(o.d_steps):
            x = real[i * b : (i + 1) * b]
            y = labels[i * b : (i + 1) * b] if self.cfg.model.num_classes else None
            z = torch.randn(b, self.cfg.model.z_dim, device=self.device, generator=self.noise)
            with autocast(self.device, self.dtype):
                fake = self.step_g(z, y)
                real_logits = self.step_d(x, y).float()
                fake_logits = self.step_d(fake.detach(), y).float()
            d_loss, parts = self.d_loss_fn(real_logits, fake_logits)
            if o.r1_gamma > 0:
                penalty, p = r1_penalty(*self._eager_logits(x.detach().requires_grad_(True), y), o.r1_gamma)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            if o.loss == "wgan-gp":
                critic = lambda t, y=y: self._eager_logits(t, y)[1]
                penalty, p = gradient_penalty(critic, x, fake, o.gp_weight, self.noise)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            self._update(self.opt_d, self.scaler_d, d_loss)
        logs["d_loss"] = d_loss.detach()
        logs.update(parts)

        # Generator: reuse the last fake batch; D's weights need no gradient for this update.
        self.D.requires_grad_(False)
        with autocast(self.device, self.dtype):
            g_logits = self.step_d(fake, y).float()
        g_loss, parts = self.g_loss_fn(g_logits)
        self._update(self.opt_g, self.scaler_g, g_loss)
        logs["g_loss"] = g_loss.detach()
        self.steps_done += 1
        self._update_ema()
        return logs

    def _eager_logits(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.dtype):
            return x, self.D(x, y).float()

    @staticmethod
    def _update(opt: torch.optim.Optimizer, scaler, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:  # fp16: scale the loss so small gradients do not flush to zero, skip steps that overflow
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

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
        """n samples; a conditional model shows one row per class where the grid allows it."""
        z = torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)
        k = self.cfg.model.num_classes
        labels = torch.arange(n, device=self.device) * k // n if k else None
        net = self.sampler
        was_training = net.training
        net.eval()
        out = net(z, labels).float()
        net.train(was_training)
        return out

    evaluation_samples = sample_grid  # in-training evaluation draws from the same sampler


# ---------------------------------------------------------------------------------------------
# A trained GAN, rebuilt from its checkpoint
# ---------------------------------------------------------------------------------------------


def truncated_normal(n: int, dim: int, truncation: float | None, generator: torch.Generator, device) -> torch.Tensor:
    """N(0, I) latents; with ``truncation`` t, entries with |z| > t are redrawn (BigGAN's trick)."""
    z = torch.randn(n, dim, device=device, generator=generator)
    if truncation is None:
        return z
    if not (math.isfinite(truncation) and truncation > 0):
        raise GenforgeError(f"truncation must be a positive number, got {truncation}")
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


class GANModel:
    """The sampling generator (EMA copy when trained with one) of a GAN checkpoint."""

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        cfg = SPEC.config_of(c)
        cfg.train.compile = False
        cfg.train.channels_last = False
        trainer = GANTrainer(cfg, device)
        for name, module in trainer.modules().items():
            ckpt.unpack_module(f"model.{name}", module, c.tensors)
        self.net = trainer.sampler.eval()
        self.device, self.config, self.step = device, cfg, c.step
        self.num_classes = cfg.model.num_classes

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

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator, truncation: float | None = None, class_label=None, **others
    ) -> torch.Tensor:
        _refuse(others, "a GAN")
        z = truncated_normal(n, self.config.model.z_dim, truncation, generator, self.device)
        labels = self._labels(class_label, n, generator)
        chunks = [labels[i : i + 256] if labels is not None else None for i in range(0, n, 256)]
        return torch.cat([self.net(zc, yc).float() for zc, yc in zip(z.split(256), chunks)])

    @torch.no_grad()
    def interpolate(
        self, rows: int, steps: int, generator: torch.Generator, truncation: float | None = None, class_label=None
    ) -> torch.Tensor:
        """``rows`` strips of ``steps`` images each, walking between two random latents."""
        if steps < 2:
            raise GenforgeError(f"interpolation needs at least 2 steps, got {steps}")
        dim = self.config.model.z_dim
        a = truncated_normal(rows, dim, truncation, generator, self.device)
        b = truncated_normal(rows, dim, truncation, generator, self.device)
        z = slerp(a, b, torch.linspace(0, 1, steps, device=self.device)).reshape(rows * steps, dim)
        labels = self._labels(class_label, rows, generator)
        labels = None if labels is None else labels.repeat_interleave(steps)
        return self.net(z, labels).float()


def _refuse(options: dict[str, Any], what: str) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise GenforgeError(
            f"sampling option '{given[0]}' does not apply to {what} (it takes: truncation, class_label)"
        )


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------


def fit_to_data(config: GANRunConfig, resolution: int, channels: int, num_classes: int = 0) -> GANRunConfig:
    """Fill the model's fields the data decides (a different value already set is an error)."""
    fill_from_data(config.model, "model", resolution=resolution, channels=channels, num_classes=num_classes)
    return config


def prepare(config: GANRunConfig, progress: bool = True) -> Prepared:
    data, config.data = load_configured(config.data, nearest=nearest_resolution)
    num_classes = 0
    if config.conditional:
        if data.labels is None:
            raise GenforgeError(f"conditional: true needs class labels, and {config.data.source} has none")
        num_classes = data.num_classes
    fit_to_data(config, data.resolution, data.channels, num_classes)
    return Prepared(config, data.images, data.labels, num_classes=num_classes, data_config=config.data)


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> GANTrainer:
    return GANTrainer(prepared.config, device, dtype)


def evaluate(model: GANModel, ctx: EvalContext) -> dict[str, Any]:
    return score_generator(model, ctx)


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """genforge 0.1 GAN configs named widths `*_channels`."""
    model = dict(config.get("model", {}))
    for old, new in (("g_channels", "g_width"), ("d_channels", "d_width"), ("max_channels", "max_width")):
        if old in model:
            model[new] = model.pop(old)
    return {**config, "model": model}


SPEC = register(
    FamilySpec(
        name="gan",
        summary="a GAN (DCGAN networks; losses: " + ", ".join(GAN_LOSSES) + ")",
        config_class=GANRunConfig,
        presets=GAN_PRESETS,
        prepare=prepare,
        build=build,
        load=GANModel,
        evaluate=evaluate,
        migrate=migrate,
    )
)
