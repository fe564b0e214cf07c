"""The GAN trainer: a generator and a discriminator trained against each other, on one device.

The game min_G max_D E[log D(x)] + E[log(1 - D(G(z)))] with the losses of ``losses.py``, optional
penalties (R1, WGAN-GP, path length), an EMA generator and discriminator augmentation, for any
pair of networks built from the run config: DCGAN's by default (``dcgan_networks``); StyleGAN2's
and FastGAN's families pass their own. ``families/gan.py`` declares the GAN family around it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from genforge.augment import PIPELINES, AdaptiveAugment
from genforge.families.gan_config import GANRunConfig
from genforge.losses import GAN_LOSSES, gradient_penalty, path_length_penalty, r1_penalty
from genforge.models.gan import Discriminator, Generator
from genforge.training.api import Trainer
from genforge.training.ddp import step_module
from genforge.training.distributed import average, randn, share
from genforge.training.precision import autocast, grad_scaler, update

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
