"""The prior family: a transformer over a trained VQ-VAE's code grids, so the VQ-VAE generates.

Codes are computed once from the data with the frozen VQ-VAE and cached in the run folder
(``codes.npz``), not re-encoded every step. The VQ-VAE's weights are stored inside every prior
checkpoint, so a prior run samples images on its own even if the VQ-VAE run moves.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import TrainConfig, fraction, from_dict, non_negative, positive
from genforge.errors import GenforgeError
from genforge.models.maskgit import MaskGIT, MaskGITConfig
from genforge.models.prior import PriorConfig, TransformerPrior
from genforge.models.vqvae import VQVAE
from genforge.training.device import autocast

KINDS = ("ar", "maskgit")


@dataclass
class PriorOptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 200  # linear learning-rate warm-up
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self):
        positive(self, "lr")
        fraction(self, "beta1", "beta2")
        non_negative(self, "weight_decay", "warmup_steps", "grad_clip")


@dataclass
class PriorRunConfig:
    vqvae: str = ""  # the VQ-VAE run (or checkpoint) whose codes this prior models
    kind: str = "ar"  # ar (autoregressive, KV cache) | maskgit (parallel decoding)
    conditional: bool = True  # condition on class labels when the data has them
    maskgit_steps: int = 8  # default decoding steps for maskgit
    model: PriorConfig = field(default_factory=PriorConfig)
    optim: PriorOptimConfig = field(default_factory=PriorOptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=128, channels_last=False))

    def __post_init__(self):
        if self.kind not in KINDS:
            raise GenforgeError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.maskgit_steps < 1:
            raise GenforgeError(f"maskgit_steps must be >= 1, got {self.maskgit_steps}")


PRIOR_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "maskgit": {"kind": "maskgit"},
    "small": {"model": {"n_layer": 2, "n_embd": 64, "n_head": 2}},
}


def build_network(cfg: PriorRunConfig) -> TransformerPrior | MaskGIT:
    if cfg.kind == "ar":
        return TransformerPrior(cfg.model)
    return MaskGIT(MaskGITConfig(**asdict(cfg.model), steps=cfg.maskgit_steps))


def load_vqvae(c: ckpt.Checkpoint, device: torch.device) -> tuple[VQVAE, Any]:
    """A VQ-VAE checkpoint -> the frozen model in eval mode and its run config."""
    from genforge.training.vqvae import VQVAERunConfig

    cfg = from_dict(VQVAERunConfig, c.config)
    model = VQVAE(cfg.model).to(device)
    ckpt.unpack_module("model.vqvae", model, c.tensors)
    return model.eval().requires_grad_(False), cfg


class PriorFamily:
    kind = "prior"

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
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.steps_done = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.net, "vqvae": self.vqvae}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"prior": self.opt}

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"steps_done": self.steps_done, "vqvae_config": self.vqvae_config}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])

    def _labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels if self.cfg.model.num_classes > 0 else None

    def train_step(self, codes: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        lr = o.lr * min(1.0, (self.steps_done + 1) / max(1, o.warmup_steps))
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            if self.cfg.kind == "ar":
                loss = self.net.nll(codes, self._labels(labels))
                parts = {"nll": loss.detach()}
            else:
                loss, parts = self.net.masked_loss(codes, self._labels(labels), generator=self.noise)
        self.opt.zero_grad(set_to_none=True)
        loss.float().backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), o.grad_clip)
        self.opt.step()
        self.steps_done += 1
        return {"loss": loss.detach().float(), **{k: v.float() for k, v in parts.items()}}

    @torch.no_grad()
    def generate_codes(self, n: int, generator: torch.Generator, labels=None, **options: Any) -> torch.Tensor:
        if self.cfg.kind == "ar":
            return self.net.generate(n, labels=labels, generator=generator, **options)
        options = {k: v for k, v in options.items() if k not in ("top_p", "use_cache")}
        return self.net.generate(n, labels=labels, generator=generator, **options)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vqvae.decode_indices(c).float().clamp(-1, 1) for c in codes.split(256)])

    @torch.no_grad()
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        labels = None
        if self.cfg.model.num_classes > 0:  # one row per class where the grid allows it
            labels = torch.arange(n, device=self.device) * self.cfg.model.num_classes // n
        return self.decode(self.generate_codes(n, generator, labels=labels))

    @torch.no_grad()
    def test_nll(self, codes: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 512) -> float:
        """Mean nats per code on held-out codes (AR: exact likelihood; MaskGIT: masked-token CE)."""
        was = self.net.training
        self.net.eval()
        g = torch.Generator(device=self.device).manual_seed(0)
        total, count = 0.0, 0
        for start in range(0, len(codes), batch_size):
            c = codes[start : start + batch_size].to(self.device)
            y = self._labels(labels[start : start + batch_size].to(self.device)) if labels is not None else None
            if self.cfg.kind == "ar":
                value = self.net.nll(c, y)
            else:
                value, _ = self.net.masked_loss(c, y, generator=g)
            total += float(value) * len(c)
            count += len(c)
        self.net.train(was)
        return total / max(1, count)


class PriorSampler:
    """Rebuilds a prior (and its embedded VQ-VAE) from a prior checkpoint alone."""

    kind = "prior"

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):
        from genforge.training.vqvae import VQVAERunConfig

        cfg = from_dict(PriorRunConfig, c.config)
        vq_cfg = from_dict(VQVAERunConfig, c.state["extra"]["vqvae_config"])
        vqvae = VQVAE(vq_cfg.model)
        self.family = PriorFamily(cfg, vqvae, c.state["extra"]["vqvae_config"], device)
        for name, module in self.family.modules().items():
            ckpt.unpack_module(f"model.{name}", module, c.tensors)
        self.family.vqvae.eval()
        self.family.net.eval()
        self.device, self.config, self.step = device, cfg, c.step

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        *,
        truncation=None,
        class_label=None,
        temperature=None,
        top_k=None,
        top_p=None,
        steps=None,
        cfg_scale=None,
        use_cache=True,
        **unused,
    ) -> torch.Tensor:
        if truncation is not None:
            raise GenforgeError("--truncation applies to GAN runs; for a prior use --temperature / --top-k / --top-p")
        num_classes = self.config.model.num_classes
        labels = None
        if class_label is not None:
            if num_classes == 0:
                raise GenforgeError("--class needs a class-conditional prior; this one was trained without labels")
            if not 0 <= class_label < num_classes:
                raise GenforgeError(f"--class must be in 0..{num_classes - 1}, got {class_label}")
            labels = class_label
        options: dict[str, Any] = {"temperature": 1.0 if temperature is None else temperature, "top_k": top_k}
        if cfg_scale is not None:
            if labels is None:
                raise GenforgeError("--cfg-scale needs --class")
            options["cfg_scale"] = cfg_scale
        if self.config.kind == "ar":
            if steps is not None:
                raise GenforgeError("--steps applies to maskgit priors; this one is autoregressive")
            options.update(top_p=top_p, use_cache=use_cache)
        else:
            if top_p is not None:
                raise GenforgeError("--top-p applies to autoregressive priors; use --top-k with maskgit")
            options["steps"] = steps
        codes = self.family.generate_codes(n, generator, labels=labels, **options)
        return self.family.decode(codes)


# ---------------------------------------------------------------------------------------------
# Code cache
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_images(
    vqvae: VQVAE, images: np.ndarray, device: torch.device, batch_size: int = 512, progress: bool = True
) -> np.ndarray:
    """uint8 (N, H, W, C) -> int16 code grids (N, h, w)."""
    from tqdm import tqdm

    from genforge.images import to_float

    out = []
    for start in tqdm(
        range(0, len(images), batch_size), desc="encoding", disable=not progress, file=sys.stderr, leave=False
    ):
        x = to_float(images[start : start + batch_size], device)
        out.append(vqvae.encode_indices(x).to(torch.int16).cpu())
    return torch.cat(out).numpy()


def cached_codes(path: Path, key: str, make) -> dict[str, np.ndarray]:
    """Load ``path`` if it was made for ``key`` (the VQ-VAE checkpoint), else make and save it."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) == key:
                return {k: f[k] for k in f.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, key=np.array(key), **arrays)
    tmp.replace(path)
    return arrays
