"""The GAN family: a generator and a discriminator trained against each other.

The game min_G max_D E[log D(x)] + E[log(1 - D(G(z)))], played with the losses of ``losses.py``
(non-saturating by default), optional penalties (R1, lazily every few steps; WGAN-GP; path length
for generators with a w space), an EMA copy of the generator for sampling, discriminator
augmentation (DiffAugment, or ADA's adaptive probability), and optionally class labels
(``conditional: true``). The networks are DCGAN's here;
``families/stylegan2.py`` trains StyleGAN2's with the same trainer. Declared once, at the bottom.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.augment import AUGMENTS, PIPELINES, AdaptiveAugment, default_mirror
from genforge.config import (
    DataConfig,
    TrainConfig,
    check,
    fill_from_data,
    fraction,
    non_negative,
    one_of,
    positive,
)
from genforge.data import fit_note, load_configured
from genforge.errors import GenforgeError
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
from genforge.losses import GAN_LOSSES, gradient_penalty, path_length_penalty, r1_penalty
from genforge.models.gan import DCGANConfig, Discriminator, Generator, nearest_resolution
from genforge.models.graphs import GeneratorGraph
from genforge.progress import SILENT, Reporter
from genforge.training.api import Trainer
from genforge.training.distributed import average, randn, share, step_module
from genforge.training.precision import autocast, grad_scaler, update

AUGMENT_POLICIES = ("none", "diffaugment", "ada")


@dataclass
class GANOptimConfig:
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # a different rate for D is the two time-scale update rule (TTUR)
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update, each on its own real batch
    r1_gamma: float = 0.0  # R1 penalty weight on real data (0 = off)
    # lazy regularisation: R1 every N steps, weighted N times, as a D step of its own when N > 1 (StyleGAN2 uses 16)
    r1_interval: int = 1
    gp_weight: float = 10.0  # gradient penalty weight, used by wgan-gp
    # Path length regularisation (StyleGAN2; generators with a w space only). 0 = off.
    pl_weight: float = 0.0
    pl_interval: int = 4  # lazy: every N steps, weighted N times, as a G step of its own when N > 1
    pl_batch_shrink: int = 2  # its batch is the generator's divided by this
    pl_decay: float = 0.01  # how fast the running mean of path lengths moves
    ema_decay: float = 0.0  # EMA of the generator's weights for sampling, per step (0 = off)
    ema_start: int = 0  # steps before the EMA starts averaging (it copies until then)
    # EMA by images (StyleGAN2's ema_kimg): half-life in thousands of images, whatever the batch (0 = off;
    # excludes ema_decay). ema_rampup > 0 caps the half-life at that fraction of the images seen so far.
    ema_kimg: float = 0.0
    ema_rampup: float = 0.0
    # Mode seeking (Mao et al. 2019, MSGAN): G also minimises 1 / (mean|G(z2,y) - G(z1,y)| /
    # mean|z2 - z1| + 1e-5), two latents for the same classes, so that different z give
    # different images. The generator's last batch doubles (its twin). 0 = off.
    mode_seeking: float = 0.0

    def __post_init__(self):
        one_of(self, "loss", GAN_LOSSES)
        positive(self, "lr_g", "lr_d", "d_steps", "r1_interval", "pl_interval", "pl_batch_shrink")
        fraction(self, "beta1", "beta2", "ema_decay", "pl_decay")
        non_negative(self, "r1_gamma", "gp_weight", "ema_start", "mode_seeking", "pl_weight", "ema_kimg", "ema_rampup")
        check(
            self.ema_kimg == 0 or self.ema_decay == 0,
            "ema_kimg",
            "and ema_decay are two ways to set the EMA: set one of them to 0",
            self.ema_kimg,
        )

    @property
    def uses_ema(self) -> bool:
        """Whether the run keeps an EMA generator (G_ema), by steps or by images."""
        return self.ema_decay > 0 or self.ema_kimg > 0


@dataclass
class AugmentConfig:
    """What the discriminator sees: reals and fakes alike pass through the same random ops."""

    policy: str = "none"  # none | diffaugment (ops at probability p) | ada (p adapted to D's overfitting)
    # Which ops: diffaugment (DiffAugment's, those in `ops`) | ada (ADA's 'bgc': flips, quarter turns,
    # shifts, scaling, rotation, colour) | auto: the policy's own. Runs with policy ada from before
    # ADA's own ops existed used DiffAugment's: `migrate` gives them pipeline diffaugment.
    pipeline: str = "auto"
    ops: tuple[str, ...] = ("color", "translation", "cutout")  # the diffaugment pipeline's
    p: float = 1.0  # diffaugment: the probability of each op per image; ada: the starting p
    target: float = 0.6  # ada: the r_t = E[sign(D(real))] it holds
    interval: int = 4  # ada: steps between adjustments
    speed: int = 500_000  # ada: images for p to move from 0 to 1 (ADA's ada_kimg = 500)
    # x-flip each real image with probability 0.5 when drawn (stylegan2-ada's --mirror), for D and
    # for every loss on reals; only for data whose mirror image is as real (not text, not digits).
    # null: on for data without labels, off for labelled data (augment.default_mirror)
    mirror: bool | None = None

    def __post_init__(self):
        one_of(self, "policy", AUGMENT_POLICIES)
        one_of(self, "pipeline", ("auto", *PIPELINES))
        check(all(op in AUGMENTS for op in self.ops), "ops", f"must be among {', '.join(AUGMENTS)}", list(self.ops))
        check(0 <= self.p <= 1, "p", "must be in [0, 1]", self.p)
        check(0 < self.target < 1, "target", "must be in (0, 1)", self.target)
        positive(self, "interval", "speed")


@dataclass
class GANRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    conditional: bool = False  # train on the data's class labels: `genforge sample --class C`
    model: DCGANConfig = field(default_factory=DCGANConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check_penalties(self)
        if self.optim.pl_weight > 0:
            raise GenforgeError(
                "optim.pl_weight (path length regularisation) needs a generator with a w space: stylegan2"
            )


def check_penalties(cfg) -> None:
    """Losses and penalties that do not work with a batch-norm discriminator, refused at start-up."""
    if cfg.optim.loss == "wgan-gp" and getattr(cfg.model, "d_norm", None) == "batch":
        raise GenforgeError("optim.loss wgan-gp needs a critic without batch norm: set model.d_norm=none or spectral")
    # R1 penalises each real sample's own gradient; batch norm makes D(x_i) depend on the rest of
    # the batch, so the penalty would not be the per-sample quantity it claims to be.
    if cfg.optim.r1_gamma > 0 and getattr(cfg.model, "d_norm", None) == "batch":
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
    # The default, conditioned on the data's classes (projection discriminator), with the
    # mode-seeking term at MSGAN's weight 1: without it the generator gives one image per class
    # (recall 0.0003 after 4 minutes on Fashion-MNIST; 0.17 with it; docs/benchmarks.md).
    "conditional": {
        "conditional": True,
        "optim": {"ema_decay": 0.999, "mode_seeking": 1.0},
        "train": {"batch_size": 128},
    },
    # Small data: the default with DiffAugment, or with ADA (its pipeline of ops, its adaptive probability).
    "diffaugment": {"optim": {"ema_decay": 0.999}, "augment": {"policy": "diffaugment"}, "train": {"batch_size": 128}},
    # ADA moves p across [0, 1] in `speed` images; its paper's 500k assume runs of millions of
    # images, where a CPU budget sees ~100k: p could not pass 0.2. 100k lets it respond in time.
    "ada": {
        "optim": {"ema_decay": 0.999},
        "augment": {"policy": "ada", "p": 0.0, "speed": 100_000},
        "train": {"batch_size": 128},
    },
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

Networks = Callable[[Any], tuple[torch.nn.Module, torch.nn.Module]]  # run config -> (G, D)
GeneratorBuilder = Callable[[Any], torch.nn.Module]  # run config -> G alone (what sampling loads)


def dcgan_networks(cfg: GANRunConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg.model), Discriminator(cfg.model)


def dcgan_generator(cfg: GANRunConfig) -> Generator:
    return Generator(cfg.model)


class GANTrainer(Trainer):
    """Generator, discriminator, optional EMA generator, augmentation and optimizers, on one device.

    ``networks`` builds (G, D) from the run config: G(z, labels, generator=...) -> images and
    D(images, labels) -> (B,) logits, whatever their architecture; with ``optim.pl_weight`` G also
    answers ``images_and_ws(z, labels, generator=...)``. ``sample_options`` are passed to the sampler
    by ``generate`` (StyleGAN2's noise_mode), so that in-training samples are made as ``evaluate``'s.
    """

    def __init__(
        self,
        cfg,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        networks: Networks = dcgan_networks,
        sample_options: dict[str, Any] | None = None,
    ):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.sample_options = dict(sample_options or {})
        m, o = cfg.model, cfg.optim
        assert m.resolution and m.channels, "model.resolution/channels must be filled in from the data"
        torch.manual_seed(cfg.train.seed)  # weight init is part of what the seed fixes
        G, D = networks(cfg)
        self.G, self.D = G.to(device), D.to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if o.uses_ema else None
        if cfg.train.channels_last:
            for net in (self.G, self.D, self.G_ema):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        # Lazy regularisation (StyleGAN2 appendix B; stylegan2-ada-pytorch's training_loop): a penalty
        # taken every N > 1 steps is a step of its own (the reference's Dreg / Greg phases: own
        # backward, own optimizer step), weighted N; Adam's rate and betas then shrink by N / (N + 1)
        # so that main + regularisation steps move the network as far as plain steps would. With
        # N = 1 the penalty is folded into every main step, and nothing shrinks (the reference's
        # Dboth / Gboth). Deviation: the reference shrinks even when the penalty's weight is 0 (its
        # `cifar` G, pl_weight 0); here only where a regularisation step exists.
        # A run resumed from a checkpoint takes Adam's rate and betas from its optimizer state.
        self.r1_separate = o.r1_gamma > 0 and o.r1_interval > 1
        self.pl_separate = o.pl_weight > 0 and o.pl_interval > 1
        lazy_d = o.r1_interval / (o.r1_interval + 1) if self.r1_separate else 1.0
        lazy_g = o.pl_interval / (o.pl_interval + 1) if self.pl_separate else 1.0
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g * lazy_g, betas=(o.beta1**lazy_g, o.beta2**lazy_g))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d * lazy_d, betas=(o.beta1**lazy_d, o.beta2**lazy_d))
        # path length regularisation's running mean of lengths (checkpointed)
        self.pl_mean = torch.zeros([], device=device) if o.pl_weight > 0 else None
        self.scaler_g, self.scaler_d = grad_scaler(device, dtype), grad_scaler(device, dtype)
        self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[o.loss]
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.draws = share(self.noise)  # per-sample draws: this rank's rows of the global batch's
        self.steps_done = 0
        a = cfg.augment
        self.ada = AdaptiveAugment(a.target, a.interval, a.speed, a.p, device) if a.policy == "ada" else None
        # Penalties differentiate D's gradient again (double backward), which a compiled module
        # cannot do: they always run through the eager D; the plain losses use the compiled one.
        self.step_g = step_module(self.G, cfg.train)
        self.step_d = step_module(self.D, cfg.train)
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
        tensors: dict[str, torch.Tensor] = {}
        state: dict[str, Any] = {"steps_done": self.steps_done}
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                state[name] = scaler.state_dict()
        if self.ada is not None:
            tensors.update({f"ada.{k}": v for k, v in self.ada.tensors().items()})
            state["ada"] = self.ada.state()
        if self.pl_mean is not None:
            tensors["pl_mean"] = self.pl_mean
        return tensors, state

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
        for name, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if scaler is not None:
                scaler.load_state_dict(state[name])
        if self.ada is not None:
            self.ada.load({k[4:]: v for k, v in tensors.items() if k.startswith("ada.")}, state["ada"])
        if self.pl_mean is not None:
            self.pl_mean.copy_(tensors["pl_mean"])

    def log_extras(self) -> dict[str, float]:
        if self.ada is None:
            return {}
        extras = {"augment_p": self.ada.p}
        if self.ada.last_rt is not None:
            extras["r_t"] = self.ada.last_rt
        return extras

    def watch(self, losses: dict[str, float]) -> str | None:
        """A warning when D has won outright: its loss near zero leaves G without a useful gradient."""
        d_loss, g_loss = losses.get("d_loss"), losses.get("g_loss")
        if d_loss is None or g_loss is None or self.cfg.optim.loss == "wgan-gp":
            return None
        if abs(d_loss) < 1e-3 and g_loss > 10:
            return (
                f"the discriminator is saturating (d_loss {d_loss:.4f}, g_loss {g_loss:.1f}): the generator gets "
                "almost no gradient; lower the learning rates (optim.lr_d, optim.lr_g) or regularise D "
                "(optim.r1_gamma, model.d_norm=spectral)"
            )
        return None

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        a = self.cfg.augment
        if a.policy == "none":
            return x
        p = self.ada.p if self.ada is not None else a.p
        pipeline = a.policy if a.pipeline == "auto" else a.pipeline
        return PIPELINES[pipeline](x, a.ops, p, self.draws)

    def _z(self, b: int) -> torch.Tensor:
        return randn(b, self.cfg.model.z_dim, generator=self.noise, device=self.device)  # this rank's share

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        b = real.shape[0] // self.batches_per_step
        conditional = bool(self.cfg.model.num_classes)
        logs: dict[str, torch.Tensor] = {}
        self.D.requires_grad_(True)
        for i in range(o.d_steps):
            x = real[i * b : (i + 1) * b]
            y = labels[i * b : (i + 1) * b] if conditional else None
            z, y_g = self._z(b), y
            if o.mode_seeking > 0 and i == o.d_steps - 1:  # the batch G learns from gets a twin
                z = torch.cat([z, self._z(b)])  # (2b, z_dim): the same classes, other latents
                y_g = None if y is None else torch.cat([y, y])
            with autocast(self.device, self.dtype):
                both = self.step_g(z, y_g, generator=self.draws)
                fake = both[:b]
                real_logits = self.step_d(self._augment(x), y).float()
                fake_logits = self.step_d(self._augment(fake.detach()), y).float()
            d_loss, parts = self.d_loss_fn(real_logits, fake_logits)
            if self.ada is not None:
                self.ada.observe(real_logits)
            if o.r1_gamma > 0 and not self.r1_separate:  # R1 every step, folded in (the reference's Dboth)
                penalty, p = r1_penalty(*self._eager_logits(x, y, augment_first=True), o.r1_gamma)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            if o.loss == "wgan-gp":
                critic = lambda t, y=y: self._eager_logits(t, y)[1]
                penalty, p = gradient_penalty(critic, x, fake, o.gp_weight, self.draws)
                d_loss, parts = d_loss + penalty, {**parts, **p}
            update(self.opt_d, self.scaler_d, d_loss)
        logs["d_loss"] = d_loss.detach()
        logs.update(parts)
        if self.r1_separate and self.steps_done % o.r1_interval == 0:  # Dreg: lazy R1, a D step of its own
            # on the last real batch, augmented anew. Deviation: ADA observes the main steps' logits
            # only (the reference also counts this forward's).
            penalty, p = r1_penalty(*self._eager_logits(x, y, augment_first=True), o.r1_gamma)
            update(self.opt_d, self.scaler_d, o.r1_interval * penalty, average=self.D)
            logs.update(p)

        # Generator: reuse the last fake batch; D's weights need no gradient for this update.
        self.D.requires_grad_(False)
        with autocast(self.device, self.dtype):
            g_logits = self.step_d(self._augment(fake), y).float()
        g_loss, parts = self.g_loss_fn(g_logits)
        # One forward made both halves (one pass for DDP and compile). Under DDP each rank takes
        # the ratio over its own pairs and DDP averages the gradients: close to, not exactly, the
        # one-process term (a mean of ratios, not a ratio of means).
        if o.mode_seeking > 0:
            ratio = (both[b:].float() - fake.float()).abs().mean() / (z[b:] - z[:b]).abs().mean()
            g_loss = g_loss + o.mode_seeking / (ratio + 1e-5)
            logs["mode_seeking_ratio"] = ratio.detach()
        if o.pl_weight > 0 and not self.pl_separate:  # path length every step, folded in (Gboth)
            penalty, p = self._path_length(b, y)
            g_loss = g_loss + penalty
            logs.update(p)
        update(self.opt_g, self.scaler_g, g_loss)
        logs["g_loss"] = g_loss.detach()
        if self.pl_separate and self.steps_done % o.pl_interval == 0:  # Greg: a G step of its own
            penalty, p = self._path_length(b, y)
            update(self.opt_g, self.scaler_g, o.pl_interval * penalty, average=self.G)
            logs.update(p)
        self.steps_done += 1
        if self.ada is not None:
            self.ada.update(self.cfg.train.batch_size)  # the global batch: images of all ranks
        self._update_ema()
        return logs

    def _eager_logits(self, x: torch.Tensor, y: torch.Tensor | None, augment_first: bool = False):
        """(the image D's gradient is taken against, D's logits) through the uncompiled D.

        With ``augment_first`` (R1): the gradient is taken against the un-augmented real and D sees
        it augmented, so the penalty differentiates through the augmentation, as stylegan2-ada-pytorch
        (real_img_tmp = real.detach().requires_grad_(); D(augment(real_img_tmp))).
        """
        seen = x
        if augment_first:
            x = x.detach().requires_grad_(True)
            seen = self._augment(x)
        with autocast(self.device, self.dtype):
            return x, self.D(seen, y).float()

    def _path_length(self, b: int, y: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The path length penalty on b / pl_batch_shrink new fakes through the uncompiled G (a double
        backward); the running mean moves (stylegan2-ada-pytorch's Gpl phase)."""
        o = self.cfg.optim
        n = max(1, b // o.pl_batch_shrink)
        z, y = self._z(n), (None if y is None else y[:n])
        with autocast(self.device, self.dtype):
            images, ws = self.G.images_and_ws(z, y, generator=self.draws)  # (n, C, H, W), (n, num_ws, w_dim)
        _, _, H, W = images.shape
        noise = randn(n, *images.shape[1:], generator=self.noise, device=self.device) / math.sqrt(H * W)
        penalty, parts = path_length_penalty(images.float(), ws, noise, self.pl_mean, o.pl_weight, o.pl_decay)
        # Under torchrun each rank's penalty uses its own batch's mean (as the reference); the stored
        # running mean is the ranks' average, the same on every rank, so a resume continues it exactly.
        self.pl_mean.copy_(average({"pl_mean": parts["pl_mean"]})["pl_mean"])
        return penalty, parts

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        decay = self.ema_step_decay()
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for eb, b in zip(self.G_ema.buffers(), self.G.buffers()):
            eb.copy_(b)

    def ema_step_decay(self) -> float:
        """The EMA's decay for the step just done (``steps_done`` counts it)."""
        o = self.cfg.optim
        n = self.steps_done - o.ema_start
        if n <= 0:
            return 0.0
        if o.ema_kimg > 0:  # by images, as stylegan2-ada-pytorch's training_loop (G_ema)
            batch = self.cfg.train.batch_size  # the global batch: images of all ranks
            seen = (self.steps_done - 1) * batch  # images before this step (the reference's cur_nimg)
            half_life = o.ema_kimg * 1000
            if o.ema_rampup > 0:
                half_life = min(half_life, seen * o.ema_rampup)
            return 0.5 ** (batch / max(half_life, 1e-8))
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): early averages
        # would otherwise be dominated by the random initial weights for thousands of steps.
        return min(o.ema_decay, (1 + n) / (10 + n))

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator used for sampling: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        net = self.sampler
        was_training = net.training
        net.eval()
        out = net(z, labels, generator=generator, **self.sample_options).float()
        net.train(was_training)
        return out

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n samples; a conditional model's classes in turn, in equal shares."""
        z = torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)
        k = self.cfg.model.num_classes
        labels = torch.arange(n, device=self.device) * k // n if k else None
        return self.generate(z, labels, generator)

    evaluation_samples = sample_grid  # in-training evaluation draws from the same sampler


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
    notes += default_mirror(config.augment, labelled=data.labels is not None)
    return Prepared(
        config,
        data,
        data.labels,
        num_classes=num_classes,
        data_config=config.data,
        notes=notes,
        mirror=config.augment.mirror,
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
    return save_grid(np.concatenate(rows), run_dir / "samples" / "classes.png", nrow=per_class)


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
    config["augment"] = {"mirror": False, **(augment if isinstance(augment, dict) else {})}
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

SPEC = register(
    FamilySpec(
        name="gan",
        summary="a GAN with DCGAN networks (losses: " + ", ".join(GAN_LOSSES) + "; DiffAugment / ADA)",
        config_class=GANRunConfig,
        presets=GAN_PRESETS,
        prepare=prepare,
        build=build,
        load=GANModel,
        evaluate=evaluate,
        finish=finish,
        migrate=migrate,
        sample_flags=SAMPLE_FLAGS,
        exports={"generator": lambda model: GeneratorGraph(model.net, model.config.model.z_dim, model.num_classes)},
    )
)
