"""The prior family: a transformer over a trained VQ-VAE's code grids, so the VQ-VAE generates.

Two networks answer the same interface (``models/transformer.py``): ``ar``, an autoregressive
GPT with a KV cache, and ``maskgit``, parallel decoding. Codes are computed once from the data
with the frozen VQ-VAE and cached in the run folder (``codes.npz``), not re-encoded every step;
their range is checked once there, so the training step never reads a value back to the host.
The VQ-VAE's weights are stored inside every prior checkpoint, so a prior run samples images on
its own even if the VQ-VAE run moves. Sampling settings chosen by ``genforge tune`` (the run's
``sampling.json``) are the trained model's defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, TrainConfig, check, fraction, from_dict, non_negative, one_of, positive, to_dict
from genforge.data import load_configured
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
from genforge.families.schedule import SCHEDULES, Schedule
from genforge.families.vqvae import SPEC as VQVAE_SPEC
from genforge.families.vqvae import (
    CodeDecoder,
    VQVAERunConfig,
    code_dtype,
    encode_images,
    load_code_decoder,
    load_vqvae,
)
from genforge.metrics.core import bits_per_dim
from genforge.metrics.table import after_training
from genforge.models.maskgit import MaskGIT, MaskGITConfig
from genforge.models.prior import TransformerPrior
from genforge.models.transformer import TransformerConfig, check_codes
from genforge.models.vqvae import VQVAE
from genforge.progress import SILENT, Reporter
from genforge.runfolder import CODES, RunFolder, atomic_path, read_records
from genforge.training.api import Trainer
from genforge.training.ddp import step_module
from genforge.training.distributed import share, step_rng
from genforge.training.precision import autocast, grad_scaler, update

NETWORKS = ("ar", "maskgit")
# Of a VQ-VAE + prior training budget (the demo's, the benchmarks'), the VQ-VAE's share; the prior
# trains for the rest. benchmarks/vq_budget_sweep.py measures the split.
VQVAE_SHARE = 0.45


def split_minutes(minutes: float, vqvae_share: float = VQVAE_SHARE) -> tuple[float, float]:
    """A VQ-VAE + prior budget -> (the VQ-VAE's minutes, the prior's minutes)."""
    return minutes * vqvae_share, minutes * (1 - vqvae_share)


@dataclass
class PriorOptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 200  # linear learning-rate warm-up
    # after the warm-up: constant, or cosine decay to lr * lr_final_ratio over the run's budget
    lr_schedule: str = "constant"  # constant | cosine (families/schedule.py)
    lr_final_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self):
        positive(self, "lr")
        fraction(self, "beta1", "beta2")
        non_negative(self, "weight_decay", "warmup_steps", "grad_clip")
        one_of(self, "lr_schedule", SCHEDULES)
        check(0 <= self.lr_final_ratio <= 1, "lr_final_ratio", "must be in [0, 1]", self.lr_final_ratio)


@dataclass
class PriorRunConfig:
    vqvae: str = ""  # the VQ-VAE run (or checkpoint) whose codes this prior models
    network: str = "ar"  # ar (autoregressive, KV cache) | maskgit (parallel decoding)
    conditional: bool = True  # condition on class labels when the data has them
    maskgit_steps: int = 8  # default decoding steps for maskgit
    model: TransformerConfig = field(default_factory=TransformerConfig)
    optim: PriorOptimConfig = field(default_factory=PriorOptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=128, channels_last=False))

    def __post_init__(self):
        one_of(self, "network", NETWORKS)
        check(self.maskgit_steps >= 1, "maskgit_steps", "must be >= 1", self.maskgit_steps)


PRIOR_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "maskgit": {"network": "maskgit"},
    "small": {"model": {"n_layer": 2, "n_embd": 64, "n_head": 2}},
}


def build_network(cfg: PriorRunConfig) -> TransformerPrior | MaskGIT:
    if cfg.network == "ar":
        return TransformerPrior(cfg.model)
    return MaskGIT(MaskGITConfig(**asdict(cfg.model), steps=cfg.maskgit_steps))


@torch.no_grad()
def decode(vqvae: VQVAE | CodeDecoder, codes: torch.Tensor) -> torch.Tensor:
    """(N, h, w) code grids -> (N, C, H, W) images in [-1, 1], 256 at a time."""
    return torch.cat([vqvae.decode_indices(c).float().clamp(-1, 1) for c in codes.split(256)])


class PriorTrainer(Trainer):
    def __init__(
        self,
        cfg: PriorRunConfig,
        vqvae: VQVAE,
        vqvae_config: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        torch.manual_seed(cfg.train.seed)
        self.vqvae, self.vqvae_config = vqvae.to(device), vqvae_config
        self.net = build_network(cfg).to(device)
        o = cfg.optim
        # Weight decay on matrices only (as nanoGPT): not on biases, norms or embeddings' scales.
        decay = [p for p in self.net.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.net.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=(o.beta1, o.beta2),
        )
        self.scaler = grad_scaler(device, dtype)  # fp16 only
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.draws = share(self.noise)  # masks and class drops: this rank's rows of the global batch's
        self.schedule = Schedule(o.lr_schedule, o.warmup_steps, o.lr_final_ratio, cfg.train.steps, cfg.train.minutes)
        self.steps_done = 0
        # The step calls the network's whole loss (mask drawing included) through what compile
        # and DDP wrap: a module whose forward is ``net.loss``.
        self.step_net = step_module(self.net, cfg.train, method="loss")

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.net, "vqvae": self.vqvae}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"prior": self.opt}

    # The VQ-VAE's config is kept for the record (the sampler is rebuilt from it); a resume
    # checks that it is there, not that it is in today's words.
    state_records = frozenset({"vqvae_config"})

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        state: dict[str, Any] = {"steps_done": self.steps_done, "vqvae_config": self.vqvae_config}
        if self.schedule.state():  # only a cosine schedule has state; older runs resume as they were
            state["schedule"] = self.schedule.state()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return {}, state

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
        self.schedule.load_state(state.get("schedule"))
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])

    def _labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels if self.cfg.model.num_classes > 0 else None

    def train_step(self, codes: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        lr = o.lr * self.schedule.factor(self.steps_done)
        for group in self.opt.param_groups:
            group["lr"] = lr
        # dropout draws from the global RNG: under torchrun, seeded per (seed, step, rank)
        with autocast(self.device, self.dtype), step_rng(self.cfg.train.seed, self.steps_done):
            loss, parts = self.step_net(codes, self._labels(labels), self.draws)
        clip = (list(self.net.parameters()), o.grad_clip) if o.grad_clip > 0 else None
        update(self.opt, self.scaler, loss.float(), clip)
        self.steps_done += 1
        return {"loss": loss.detach().float(), **{k: v.float() for k, v in parts.items()}}

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return decode(self.vqvae, codes)

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        labels = None
        if self.cfg.model.num_classes > 0:  # one row per class where the grid allows it
            labels = torch.arange(n, device=self.device) * self.cfg.model.num_classes // n
        return self.decode(self.net.generate(n, labels=labels, generator=generator))

    evaluation_samples = sample_grid


# ---------------------------------------------------------------------------------------------
# A trained prior, rebuilt from its checkpoint (the VQ-VAE inside it)
# ---------------------------------------------------------------------------------------------


class PriorModel(TunedSampling):
    """A trained prior: its network and its VQ-VAE's quantizer and decoder (no encoder, no optimizer)."""

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        cfg = SPEC.config_of(c)
        vq_cfg = from_dict(VQVAERunConfig, VQVAE_SPEC.migrate(c.state["extra"]["vqvae_config"]))
        with torch.random.fork_rng(devices=[]):  # the weights are the checkpoint's: leave the caller's RNG alone
            net = build_network(cfg).to(device)
        ckpt.unpack_module("model.prior", net, c.tensors)
        self.network: TransformerPrior | MaskGIT = net.eval().requires_grad_(False)
        self.decoder = load_code_decoder(vq_cfg.model, c.tensors, device)
        self.device, self.config, self.step = device, cfg, c.step
        self.num_classes = cfg.model.num_classes
        self._frequencies: tuple[np.ndarray, str] | None = None  # read on first need (class_frequencies)
        self.read_tuning(c.path)  # settings chosen by genforge tune: sample's and evaluate's defaults

    def sampling_space(self) -> dict[str, tuple]:
        """What ``genforge tune`` searches (the network's options and their candidate values)."""
        return self.network.sampling_space()

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return self.network.check_options(options)

    def sample(
        self, n: int, generator: torch.Generator, class_label=None, tuned: bool = True, **options
    ) -> torch.Tensor:
        """n images: codes from the prior, decoded. Options as the network takes them; the run's
        tuned settings (``sampling.json``) fill in the ones not given, unless ``tuned`` is False."""
        options = self.sampling_options(options, tuned)
        if class_label is not None and self.num_classes == 0:
            raise GenforgeError("a class was asked for, but this prior was trained without labels")
        if isinstance(class_label, int) and not 0 <= class_label < self.num_classes:
            raise GenforgeError(f"class must be in 0..{self.num_classes - 1}, got {class_label}")
        if class_label is None and self.num_classes and options.get("cfg_scale", 1.0) != 1.0:
            # guidance steers towards a class: with none asked for, draw each sample's as evaluate does
            frequencies = torch.as_tensor(self.class_frequencies()[0], dtype=torch.float64, device=self.device)
            class_label = torch.multinomial(frequencies, n, replacement=True, generator=generator)
        codes = self.network.generate(n, labels=class_label, generator=generator, **options)
        return decode(self.decoder, codes)

    @torch.no_grad()
    def held_out_loss(self, codes: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 512) -> float:
        """Mean of the network's loss on held-out codes, in nats per code (AR: exact NLL)."""
        g = torch.Generator(device=self.device).manual_seed(0)
        total, count = 0.0, 0
        for start in range(0, len(codes), batch_size):
            c = codes[start : start + batch_size].to(self.device)
            y = None
            if labels is not None and self.num_classes > 0:
                y = labels[start : start + batch_size].to(self.device)
            value, _ = self.network.loss(c, y, g)
            total += float(value) * len(c)
            count += len(c)
        return total / max(1, count)

    def class_frequencies(self) -> tuple[np.ndarray, str]:
        """The training data's class fractions (from the run's ``codes.npz``) and where they came
        from; uniform, said so, when the run folder has none."""
        if self._frequencies is None:
            labels = None
            path = RunFolder(self.run_dir).codes if self.run_dir is not None else None
            if path is not None and path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as f:
                        labels = f["train_labels"] if "train_labels" in f.files else None
                except (OSError, ValueError):
                    labels = None
            if labels is not None and len(labels):
                counts = np.bincount(labels, minlength=self.num_classes)[: self.num_classes].astype(np.float64)
                self._frequencies = (counts / counts.sum(), "at the training data's class frequencies")
            else:
                self._frequencies = (np.full(self.num_classes, 1 / self.num_classes), f"uniformly (no {CODES})")
        return self._frequencies

    def sampling_note(self, class_label=None, tuned: bool = True, **options) -> str:
        """``TunedSampling.sampling_note``, saying how classes are drawn when guidance needs one."""
        note = super().sampling_note(class_label, tuned, **options)
        used = self.sampling_options(options, tuned)
        if class_label is None and self.num_classes and used.get("cfg_scale", 1.0) != 1.0:
            note += f"; no --class: classes drawn {self.class_frequencies()[1]} (guidance needs one)"
        return note


# ---------------------------------------------------------------------------------------------
# Code cache
# ---------------------------------------------------------------------------------------------


def cached_codes(path: Path, key: str, make) -> dict[str, np.ndarray]:
    """Load ``path`` if it was made for ``key`` (the VQ-VAE checkpoint), else make and save it."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == key:
                    return {k: f[k] for k in f.files}
        except (OSError, ValueError, KeyError):
            pass  # unreadable: made again below
    arrays = make()
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, key=np.array(key), **arrays)
    return arrays


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------


def prepare(config: PriorRunConfig, reporter: Reporter = SILENT) -> Prepared:
    if not config.vqvae:
        raise GenforgeError("a prior needs its VQ-VAE: pass --vqvae RUN")
    c_vq = ckpt.load(config.vqvae, kind="vqvae", map_location="cpu")
    vqvae, vq_cfg = load_vqvae(c_vq, torch.device("cpu"))
    data, _ = load_configured(vq_cfg.data, lazy=True, reporter=reporter)  # packed data is encoded chunk by chunk
    num_classes = data.num_classes if (config.conditional and data.labels is not None) else 0
    m = to_dict(config.model)
    m.update(vocab_size=vqvae.num_codes, grid_h=vqvae.grid_size[0], grid_w=vqvae.grid_size[1], num_classes=num_classes)
    config.model = TransformerConfig(**m)
    config.vqvae = str(Path(config.vqvae))
    extras = {"vqvae": vqvae, "vqvae_checkpoint": c_vq, "vqvae_run": vq_cfg, "data": data}
    return Prepared(config, None, data.labels, num_classes=num_classes, data_config=vq_cfg.data, extras=extras)


def training_data(prepared: Prepared, run_dir: Path, device: torch.device, reporter: Reporter) -> None:
    """The training codes, encoded once with the frozen VQ-VAE and cached in ``codes.npz``."""
    c_vq, vqvae, data = prepared.extras["vqvae_checkpoint"], prepared.extras["vqvae"], prepared.extras["data"]
    vqvae.to(device)
    # The VQ-VAE checkpoint and the index type name the cache (genforge 0.1 kept every code in int16).
    key = f"{c_vq.path.resolve()}@{c_vq.step}|{code_dtype(vqvae.num_codes).name}"

    def make() -> dict[str, np.ndarray]:
        train_codes = []
        with reporter.progress(total=len(data), desc="encoding", unit="image") as bar:
            for chunk in data.chunks():  # packed data is read a chunk at a time
                train_codes.append(encode_images(vqvae, chunk, device))
                bar.update(len(chunk))
        arrays = {"train": np.concatenate(train_codes)}
        if data.labels is not None:
            arrays["train_labels"] = data.labels
        try:
            test, _ = load_configured(prepared.extras["vqvae_run"].data, split="test", reporter=reporter)
        except GenforgeError:
            return arrays  # single-split data: no held-out loss
        arrays["test"] = encode_images(vqvae, test.images, device, reporter=reporter)
        if test.labels is not None:
            arrays["test_labels"] = test.labels
        return arrays

    reporter.say(f"codes of {len(data)} images from {c_vq.path} (cached in {RunFolder(run_dir).codes})")
    codes = cached_codes(RunFolder(run_dir).codes, key, make)
    # Checked once here, so the training step need not read codes back to the host.
    for split in ("train", "test"):
        if split in codes:
            check_codes(codes[split], vqvae.num_codes)
    prepared.images = codes["train"]
    prepared.labels = codes.get("train_labels")
    prepared.extras["codes"] = codes


def build(prepared: Prepared, device: torch.device, dtype: torch.dtype) -> PriorTrainer:
    c_vq = prepared.extras["vqvae_checkpoint"]
    vq_values = VQVAE_SPEC.migrate(c_vq.config)
    return PriorTrainer(prepared.config, prepared.extras["vqvae"], vq_values, device, dtype)


def finish(run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter) -> dict[str, float] | None:
    """The held-out loss of the trained prior, named for what it is."""
    codes = prepared.extras.get("codes", {})
    if "test" not in codes:
        return None
    model = PriorModel(ckpt.load(run_dir, kind="prior", map_location=device), device)
    labels = torch.from_numpy(codes["test_labels"]).long() if "test_labels" in codes else None
    nats = model.held_out_loss(torch.from_numpy(codes["test"].astype(np.int64)), labels)
    if not model.network.LOSS_IS_LIKELIHOOD:
        scores = {"masked_code_ce": nats}
        what = f"held-out masked-code cross-entropy {nats:.4f} nats/code (not a likelihood)"
    else:
        vq = prepared.extras["vqvae_run"].model
        h, w = model.decoder.grid_size
        scores = {"code_nll": nats, "code_bits_per_dim": bits_per_dim(nats, h * w, vq.resolution**2, vq.channels)}
        what = f"held-out code NLL {nats:.4f} nats/code, {scores['code_bits_per_dim']:.4f} bits per pixel dim"
    reporter.say(what)
    return scores


def evaluate(model: PriorModel, ctx: EvalContext) -> dict[str, Any]:
    """Samples scored like any generator's (with the run's tuned sampling settings, named in the
    result), with the held-out code loss training recorded."""
    scores = score_generator(model, ctx)  # with the "sampling" note of the settings used
    recorded = after_training()  # the held-out code loss
    for entry in read_records(ctx.run_dir) if ctx.run_dir is not None else []:
        if entry["type"] == "eval":
            scores.update({k: v for k, v in entry["values"].items() if k in recorded})
    return scores


def data_config(c: ckpt.Checkpoint):
    """A prior's samples are compared with the data its VQ-VAE was trained on."""
    vq_values = VQVAE_SPEC.migrate(c.state["extra"]["vqvae_config"])
    return from_dict(VQVAERunConfig, vq_values).data


# `genforge sample` flags: the options of both networks (each refuses the ones it does not take).
SAMPLE_FLAGS = (
    SampleFlag("--temperature", "temperature", "softmax temperature (default 1; 0 is greedy)", metavar="T"),
    SampleFlag("--top-k", "top_k", "sample among the k most likely codes", count(1), metavar="K"),
    SampleFlag("--top-p", "top_p", "nucleus sampling mass, in (0, 1] (ar network)", metavar="P"),
    SampleFlag("--cfg-scale", "cfg_scale", "classifier-free guidance scale, with --class (1: off)", metavar="S"),
    SampleFlag(
        "--decode-steps", "steps", "parallel decoding steps (maskgit network)", count(1), metavar="N", old=("--steps",)
    ),
    SampleFlag("--no-cache", "use_cache", "recompute the prefix every step, slow (ar network)", None, value=False),
)


def add_arguments(parser) -> None:
    parser.add_argument("--vqvae", required=True, type=Path, help="the trained VQ-VAE run")
    parser.add_argument("--network", choices=NETWORKS, help="autoregressive (default) or parallel decoding")


def from_arguments(args) -> dict[str, Any]:
    values: dict[str, Any] = {"vqvae": str(args.vqvae)}
    if args.network is not None:
        values["network"] = args.network
    return values


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """genforge 0.1 prior configs called the network `kind`. Options added since take their
    defaults (the values older runs trained with), except the attention dropout: it was the
    model's dropout then, 0 by default now."""
    if "kind" in config:
        config = {k: v for k, v in config.items() if k != "kind"} | {"network": config["kind"]}
    model = config.get("model")
    if isinstance(model, dict) and "attn_dropout" not in model:
        config = {**config, "model": {**model, "attn_dropout": model.get("dropout", TransformerConfig.dropout)}}
    return config


class PriorFamily(FamilySpec):
    """The prior family: a transformer over a VQ-VAE run's codes; its data is that run's."""

    name = "prior"
    summary = "a transformer prior over a VQ-VAE's codes (ar or maskgit), so the VQ-VAE generates"
    config_class = PriorRunConfig
    presets = PRIOR_PRESETS
    sample_flags = SAMPLE_FLAGS
    cannot_export = (
        "its sampling loop runs in Python, step by step; export its VQ-VAE's decoder "
        "(genforge export VQVAE_RUN --part decoder) and draw codes in PyTorch"
    )

    def prepare(self, config: PriorRunConfig, reporter: Reporter = SILENT) -> Prepared:
        return prepare(config, reporter)

    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> PriorTrainer:
        return build(prepared, device, dtype)

    def load(self, checkpoint: ckpt.Checkpoint, device: torch.device) -> PriorModel:
        return PriorModel(checkpoint, device)

    def evaluate(self, model: PriorModel, ctx: EvalContext) -> dict[str, Any]:
        return evaluate(model, ctx)

    def data_config(self, c: ckpt.Checkpoint) -> DataConfig:
        return data_config(c)

    def training_data(self, prepared: Prepared, run_dir: Path, device: torch.device, reporter: Reporter) -> None:
        return training_data(prepared, run_dir, device, reporter)

    def finish(
        self, run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter
    ) -> dict[str, float] | None:
        return finish(run_dir, prepared, device, reporter)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def from_arguments(self, args: argparse.Namespace) -> dict[str, Any]:
        return from_arguments(args)

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        return migrate(config)


SPEC = register(PriorFamily())
