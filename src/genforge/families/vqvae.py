"""The VQ-VAE family: encoder, vector-quantized codebook (or FSQ), decoder; optionally VQGAN-style.

A VQ-VAE reconstructs; it generates only with a prior over its codes (the ``prior`` family). Its
evaluation therefore scores reconstructions of the held-out split: MSE/PSNR/SSIM, codebook usage,
and how far the reconstructions lie from the data in feature space. The helpers that load a
trained VQ-VAE, encode images to codes and reconstruct them live here, beside the family.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.augment import default_mirror, stored_mirror
from genforge.config import DataConfig, TrainConfig, check, fill_from_data, fraction, non_negative, one_of, positive
from genforge.data import ImageData, fit_note, load_configured
from genforge.errors import GenforgeError
from genforge.families.registry import EvalContext, FamilySpec, Prepared, Reconstructor, register
from genforge.families.schedule import SCHEDULES, Schedule
from genforge.images import to_float, to_uint8
from genforge.losses import RECONSTRUCTION_LOSSES, adaptive_weight, d_hinge, g_hinge, perceptual_distance, vqvae_loss
from genforge.metrics.core import codebook_usage, perplexity
from genforge.metrics.evaluate import evaluate_samples, reconstruction_metrics
from genforge.models.graphs import DecoderGraph, EncoderGraph
from genforge.models.patchgan import PatchGAN, PatchGANConfig
from genforge.models.perceptual import NETWORKS as PERCEPTUAL_NETWORKS
from genforge.models.perceptual import FeatureMaps, check_feature_maps, load_feature_maps
from genforge.models.quantizers import CodebookHealth, build_quantizer
from genforge.models.vqvae import VQVAE, Decoder, VQVAEConfig, nearest_resolution
from genforge.progress import SILENT, Reporter
from genforge.training.api import Trainer
from genforge.training.ddp import step_module
from genforge.training.precision import autocast, grad_scaler, update


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
    # VQGAN's perceptual term, offline: feature maps of a frozen network (models/perceptual.py).
    perceptual_weight: float = 0.0  # 0 = off
    perceptual_net: str = "classifier"  # classifier (a CNN on the data's labels) | inception (GPU: 50x on CPU)
    # The autoencoder's learning rate (not the discriminator's): warm-up, then constant or cosine
    # decay to lr * lr_final_ratio over the run's budget (families/schedule.py).
    lr_schedule: str = "constant"  # constant | cosine
    lr_final_ratio: float = 0.1
    warmup_steps: int = 0
    health_window: int = 100  # batches over which codebook usage/perplexity are counted

    def __post_init__(self):
        positive(self, "lr", "lr_d", "health_window")
        fraction(self, "beta1", "beta2")
        non_negative(self, "disc_weight", "disc_start", "perceptual_weight", "warmup_steps")
        one_of(self, "recon_loss", RECONSTRUCTION_LOSSES)
        one_of(self, "perceptual_net", PERCEPTUAL_NETWORKS)
        one_of(self, "lr_schedule", SCHEDULES)
        check(0 <= self.lr_final_ratio <= 1, "lr_final_ratio", "must be in [0, 1]", self.lr_final_ratio)


@dataclass
class VQVAEAugmentConfig:
    """What the training images go through when drawn (the GAN families' augment section has
    the same key)."""

    # x-flip each image with probability 0.5 when drawn (stylegan2-ada's --mirror); null: on for
    # data without labels, off for labelled data (augment.default_mirror)
    mirror: bool | None = None


@dataclass
class VQVAERunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    discriminator: PatchGANConfig = field(default_factory=PatchGANConfig)
    optim: VQVAEOptimConfig = field(default_factory=VQVAEOptimConfig)
    augment: VQVAEAugmentConfig = field(default_factory=VQVAEAugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    # EMA codebook, k-means init and dead-code restarts: the measures against codebook collapse.
    "default": {"train": {"batch_size": 64}},
    # The VQ-VAE paper's quantizer with none of them: shows what collapse looks like.
    "plain-vq": {"model": {"quantizer": {"ema": False, "kmeans_init": False, "restart_after": 0}}},
    "fsq": {"model": {"quantizer": {"method": "fsq"}}},
    # L1 plus the perceptual term: sharper reconstructions without a discriminator's cost.
    "perceptual": {"optim": {"recon_loss": "l1", "perceptual_weight": 1.0}},
    # VQGAN (Esser et al. 2021): L1 + perceptual term + a patch discriminator, adaptively weighted,
    # after a warm-up of plain reconstruction.
    "vqgan": {"optim": {"disc_weight": 0.1, "disc_start": 1000, "recon_loss": "l1", "perceptual_weight": 1.0}},
}


class VQVAETrainer(Trainer):
    def __init__(
        self,
        cfg: VQVAERunConfig,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        grid_images: torch.Tensor | None = None,
        perceptual: FeatureMaps | None = None,
    ):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        torch.manual_seed(cfg.train.seed)
        o = cfg.optim
        if o.perceptual_weight > 0 and perceptual is None:
            raise GenforgeError("optim.perceptual_weight > 0 needs the frozen perceptual network (load_feature_maps)")
        # Frozen, and held apart from modules(): no optimizer, no checkpoint (its fingerprint is kept).
        self.perceptual = perceptual.freeze() if o.perceptual_weight > 0 else None
        self.model = VQVAE(cfg.model).to(device)
        self.disc = PatchGAN(cfg.discriminator).to(device) if o.disc_weight > 0 else None
        if cfg.train.channels_last:
            for net in (self.model, self.disc):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = None
        if self.disc is not None:
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=o.lr_d, betas=(0.5, 0.9))
        self.scaler, self.scaler_d = grad_scaler(device, dtype), grad_scaler(device, dtype)  # fp16 only
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.health = CodebookHealth(self.model.num_codes, o.health_window, device)
        self.schedule = Schedule(o.lr_schedule, o.warmup_steps, o.lr_final_ratio, cfg.train.steps, cfg.train.minutes)
        self.steps_done = 0
        self.step_model = step_module(self.model, cfg.train)
        self.step_disc = step_module(self.disc, cfg.train) if self.disc is not None else None
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
        state: dict[str, Any] = {"steps_done": self.steps_done, "health_batches": self.health.batches}
        # Entries that only newer options need: a run without them reads and writes what it always did.
        if self.schedule.state():
            state["schedule"] = self.schedule.state()
        if self.perceptual is not None:
            state["perceptual_net"] = self.perceptual.fingerprint()
        if self.scaler is not None:
            state["scaler"], state["scaler_d"] = self.scaler.state_dict(), self.scaler_d.state_dict()
        return {"health_counts": self.health.counts.cpu()}, state

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
        if tensors["health_counts"].shape != self.health.counts.shape:
            raise GenforgeError("checkpoint's codebook-health window does not match optim.health_window")
        self.health.counts.copy_(tensors["health_counts"])
        self.health.batches = int(state["health_batches"])
        self.schedule.load_state(state.get("schedule"))
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        if self.perceptual is not None and state["perceptual_net"] != self.perceptual.fingerprint():
            raise GenforgeError(
                f"the perceptual network ({self.cfg.optim.perceptual_net}) is not the one this run trained with "
                "(its cache was retrained or replaced); resuming would change the loss: train into a new --out"
            )

    def log_extras(self) -> dict[str, float]:
        return self.health.summary()

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        lr = o.lr * self.schedule.factor(self.steps_done)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            recon, q = self.step_model(x)
        perceptual = None
        if self.perceptual is not None:
            with autocast(self.device, self.dtype):
                with torch.no_grad():
                    target_maps = self.perceptual(x)
                perceptual = perceptual_distance(self.perceptual(recon), target_maps)
        loss, parts = vqvae_loss(
            x,
            recon,
            q.loss,
            q.parts,
            recon_loss=o.recon_loss,
            perceptual=perceptual,
            perceptual_weight=o.perceptual_weight,
        )
        adversarial = self.disc is not None and self.steps_done >= o.disc_start
        if adversarial:
            self.disc.requires_grad_(False)
            with autocast(self.device, self.dtype):
                g_adv, _ = g_hinge(self.disc(recon).float())
            weight = o.disc_weight * adaptive_weight(loss, g_adv, self.model.decoder.last_layer.weight)
            loss = loss + weight * g_adv
            parts = {**parts, "g_adv": g_adv.detach(), "adv_weight": weight}
        update(self.opt, self.scaler, loss)
        if adversarial:
            self.disc.requires_grad_(True)
            with autocast(self.device, self.dtype):
                real_logits, fake_logits = self.step_disc(x).float(), self.step_disc(recon.detach()).float()
            d_loss, d_parts = d_hinge(real_logits, fake_logits)
            update(self.opt_d, self.scaler_d, d_loss)
            parts = {**parts, "d_loss": d_loss.detach()}
        self.health.update(q.indices)
        self.steps_done += 1
        return {"loss": loss.detach(), **parts}

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Originals and reconstructions interleaved column-wise: pairs side by side."""
        assert self.grid_images is not None, "the VQ-VAE trainer needs grid_images to draw sample grids"
        half = max(1, n // 2)
        x = self.grid_images[:half].to(self.device)
        was = self.model.training
        self.model.eval()
        recon = self.model(x)[0].float().clamp(-1, 1)
        self.model.train(was)
        return torch.stack([x, recon], 1).flatten(0, 1)  # (2*half, C, H, W): original, recon, ...


# ---------------------------------------------------------------------------------------------
# A trained VQ-VAE: load, encode, reconstruct
# ---------------------------------------------------------------------------------------------


def load_vqvae(c: ckpt.Checkpoint, device: torch.device) -> tuple[VQVAE, VQVAERunConfig]:
    """A VQ-VAE checkpoint -> the frozen model in eval mode and its run config."""
    cfg = SPEC.config_of(c)
    with torch.random.fork_rng(devices=[]):  # the weights are the checkpoint's: leave the caller's RNG alone
        model = VQVAE(cfg.model).to(device)
    ckpt.unpack_module("model.vqvae", model, c.tensors)
    return model.eval().requires_grad_(False), cfg


class CodeDecoder(torch.nn.Module):
    """A VQ-VAE's quantizer and decoder without its encoder: code grids -> images, which is all a
    prior samples through."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.quantizer = build_quantizer(config.quantizer, config.latent_dim)
        self.decoder = Decoder(config)

    grid_size = VQVAE.grid_size
    num_codes = VQVAE.num_codes
    decode_indices = VQVAE.decode_indices  # (B, h, w) code indices -> (B, C, H, W) images


def load_code_decoder(config: VQVAEConfig, tensors: dict[str, torch.Tensor], device: torch.device) -> CodeDecoder:
    """The quantizer and decoder of the VQ-VAE stored under ``model.vqvae`` (each loaded strictly),
    frozen, in eval mode; the encoder's weights are not read."""
    with torch.random.fork_rng(devices=[]):  # the weights are the checkpoint's: leave the caller's RNG alone
        model = CodeDecoder(config).to(device)
    ckpt.unpack_module("model.vqvae.quantizer", model.quantizer, tensors)
    ckpt.unpack_module("model.vqvae.decoder", model.decoder, tensors)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def encode_images(
    vqvae: VQVAE,
    images: np.ndarray,
    device: torch.device,
    batch_size: int = 512,
    reporter: Reporter = SILENT,
) -> np.ndarray:
    """uint8 (N, H, W, C) -> code grids (N, h, w) in the smallest integer type that holds every code."""
    dtype = code_dtype(vqvae.num_codes)
    out = []
    for start in reporter.track(range(0, len(images), batch_size), "encoding"):
        x = to_float(images[start : start + batch_size], device)
        out.append(vqvae.encode_indices(x).cpu().numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros((0, *vqvae.grid_size), dtype)


def code_dtype(num_codes: int) -> np.dtype:
    """int16 while every index fits (half the memory of int32), int32 beyond 32,767 codes."""
    return np.dtype(np.int16) if num_codes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


@torch.no_grad()
def reconstruct_images(
    model: Reconstructor, images: np.ndarray, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 reconstructions of the same shape."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        out.append(to_uint8(model.reconstruct(x)))
    return np.concatenate(out)


class VQVAEModel:
    """A trained VQ-VAE: encoder, quantizer, decoder (``genforge evaluate``, ``reconstruct``,
    ``encode``, ``export``). A ``registry.Reconstructor``; it does not sample (a prior does)."""

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        self.vqvae, self.config = load_vqvae(c, device)  # no discriminator, even for a VQGAN run
        self.device, self.step, self.path = device, c.step, c.path

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h, w) code indices."""
        return self.vqvae.encode_indices(images)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, C, H, W) images in [-1, 1]."""
        return self.vqvae.decode_indices(codes).float().clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> their reconstructions, the same shape."""
        return self.vqvae(images)[0].float().clamp(-1, 1)

    def data(
        self, source: str | None = None, split: str = "test", n: int = 0, reporter: Reporter = SILENT
    ) -> ImageData:
        """Images loaded as this VQ-VAE saw them in training (optionally from another source)."""
        cfg = replace(self.config.data, source=source) if source else self.config.data
        return load_configured(replace(cfg, limit=n or 0), split=split, reporter=reporter)[0]


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------


def fit_to_data(config: VQVAERunConfig, resolution: int, channels: int) -> VQVAERunConfig:
    """Fill the model's fields the data decides (a different value already set is an error)."""
    fill_from_data(config.model, "model", resolution=resolution, channels=channels)
    fill_from_data(config.discriminator, "discriminator", channels=channels)
    return config


def prepare(config: VQVAERunConfig, reporter: Reporter = SILENT) -> Prepared:
    downsample, asked = config.model.downsample, config.data
    nearest = lambda side: nearest_resolution(side, downsample)  # noqa: E731
    data, config.data = load_configured(config.data, nearest=nearest, lazy=True, reporter=reporter)  # packed: on disk
    fit_to_data(config, data.resolution, data.channels)
    if config.optim.perceptual_weight > 0:  # refused now, before the run folder is touched
        check_feature_maps(config.optim.perceptual_net, labelled=data.labels is not None)
    grid = to_float(data.take(np.arange(min(len(data), config.train.grid_images // 2))))
    notes = [note] if (note := fit_note(asked, config.data)) else []
    mirror_notes, decided = default_mirror(config.augment, labelled=data.labels is not None)
    notes += mirror_notes
    return Prepared(
        config,
        data,
        data.labels,
        extras={"grid_images": grid},
        data_config=config.data,
        notes=notes,
        mirror=config.augment.mirror,
        decided=decided,
    )


def training_data(prepared: Prepared, run_dir, device: torch.device, reporter: Reporter) -> None:
    """The frozen perceptual network, when the loss has the term (its classifier trained once, cached)."""
    o = prepared.config.optim
    if o.perceptual_weight > 0:
        prepared.extras["perceptual"] = load_feature_maps(
            o.perceptual_net, prepared.config.data.source, device, reporter
        )


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> VQVAETrainer:
    extras = prepared.extras
    return VQVAETrainer(
        prepared.config, device, dtype, grid_images=extras["grid_images"], perceptual=extras.get("perceptual")
    )


def evaluate(model: VQVAEModel, ctx: EvalContext) -> dict[str, Any]:
    """Reconstructions of up to ``n`` held-out images (training images for single-split data, said
    in the result): pixel metrics, codebook use, feature distance."""
    result: dict[str, Any] = {}
    try:
        test = load_configured(replace(ctx.data, limit=ctx.n), split="test", reporter=ctx.reporter)[0]
        result["recon_split"] = "test"
    except GenforgeError:
        test = load_configured(replace(ctx.data, limit=ctx.n), split="train", reporter=ctx.reporter)[0]
        result["recon_split"] = "train"
    t0 = time.perf_counter()
    recon = reconstruct_images(model, test.images, ctx.device)
    result["reconstruct_images_per_s"] = len(test) / (time.perf_counter() - t0)
    result.update(reconstruction_metrics(test.images, recon))
    codes = encode_images(model.vqvae, test.images, ctx.device)
    counts = np.bincount(codes.ravel().astype(np.int64), minlength=model.vqvae.num_codes)
    result.update(codebook_usage=codebook_usage(counts), codebook_perplexity=perplexity(counts))
    # How far reconstructions are from the data, in the same feature space as the generators.
    scores = evaluate_samples(recon, ctx.reference, ctx.extractor, reporter=ctx.reporter)
    result.update({f"recon_{k}": v for k, v in scores.items() if k in ("fd", "kid", "precision", "recall")})
    result["n"] = len(test)
    return result


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """genforge 0.1 VQ-VAE configs: `in_channels` was the image channels and `channels` the width;
    the quantizer's method was called `kind`; the discriminator's width `channels`. Options added
    since need nothing here: read through today's config class they take their defaults, which
    are the values older runs trained with, except `augment.mirror`, whose default is now decided
    by the data: runs from before it trained without it."""
    model = dict(config.get("model", {}))
    if "in_channels" in model:
        model["width"] = model.pop("channels", VQVAEConfig.width)
        model["channels"] = model.pop("in_channels")
        if "max_channels" in model:
            model["max_width"] = model.pop("max_channels")
    quantizer = dict(model.get("quantizer", {}))
    if "kind" in quantizer:
        quantizer["method"] = quantizer.pop("kind")
        model["quantizer"] = quantizer
    disc = dict(config.get("discriminator", {}))
    if "in_channels" in disc:
        disc["width"] = disc.pop("channels", PatchGANConfig.width)
        disc["channels"] = disc.pop("in_channels")
    return {**config, "model": model, "discriminator": disc, "augment": stored_mirror(config.get("augment"))}


class VQVAEFamily(FamilySpec):
    """The VQ-VAE family: it reconstructs; it generates through a prior (families/prior.py)."""

    name = "vqvae"
    summary = "a VQ-VAE: encoder, vector-quantized codebook (or FSQ), decoder"
    config_class = VQVAERunConfig
    presets = VQVAE_PRESETS
    grid_caption = "originals and reconstructions, in pairs"
    exports = {
        "decoder": lambda model: DecoderGraph(model.vqvae),
        "encoder": lambda model: EncoderGraph(model.vqvae),
    }

    def prepare(self, config: VQVAERunConfig, reporter: Reporter = SILENT) -> Prepared:
        return prepare(config, reporter)

    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> VQVAETrainer:
        return build(prepared, device, dtype)

    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> VQVAEModel:
        return VQVAEModel(checkpoint, device)

    def evaluate(self, model: VQVAEModel, ctx: EvalContext) -> dict[str, Any]:
        return evaluate(model, ctx)

    def training_data(self, prepared: Prepared, run_dir: Path, device: torch.device, reporter: Reporter) -> None:
        return training_data(prepared, run_dir, device, reporter)

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        return migrate(config)


SPEC = register(VQVAEFamily())
