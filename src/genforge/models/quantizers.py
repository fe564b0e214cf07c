"""Quantizers for the VQ-VAE family, and a windowed codebook-usage tracker.

``VectorQuantizer`` is the quantizer of the VQ-VAE paper (van den Oord et al. 2017): each
encoder vector is replaced by its nearest codebook vector in L2 distance, gradients pass
straight through, and the loss is ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2 with beta on the
encoder-side (commitment) term. Options against codebook collapse: EMA codebook updates
(VQ-VAE-2 / Sonnet), k-means initialisation, dead-code restarts, cosine (l2-normalised) codes,
and a lower codebook dimension behind 1x1 projections (ViT-VQGAN, Yu et al. 2021).

``FiniteScalarQuantizer`` is FSQ (Mentzer et al. 2023): bound each of a few channels and round
it to one of L_i levels; the implicit codebook is the grid, so there is no codebook loss.

All state that must survive a checkpoint lives in buffers, so ``state_dict`` is the whole truth.
A training forward never reads a value back to the host (no ``.item()``, ``nonzero`` or
boolean-mask indexing; counts by ``scatter_add_``, not ``bincount``, which sizes its output from
the data on CUDA): a GPU keeps its queue full. The one exception is the first training batch,
which asks whether the codebook still needs its k-means initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from genforge.config import check, non_negative, one_of, positive
from genforge.errors import GenforgeError

METHODS = ("vq", "fsq")


@dataclass
class QuantizerConfig:
    method: str = "vq"  # vq (a learned codebook) | fsq (finite scalar quantization)
    num_codes: int = 512  # vq only; fsq's count is the product of fsq_levels
    code_dim: int = 0  # codebook dimension; 0 = the encoder's latent_dim (no projection)
    beta: float = 0.25  # weight of the commitment (encoder-side) term
    ema: bool = True  # EMA codebook updates instead of a codebook loss
    decay: float = 0.99  # EMA decay
    kmeans_init: bool = True  # first training batch initialises the codebook by k-means
    restart_after: int = 100  # training steps a code may go unused before it is restarted (0 = off)
    cosine: bool = False  # l2-normalise codes and encoder vectors
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # fsq only: 8*5*5*5 = 1000 codes

    def __post_init__(self):
        one_of(self, "method", METHODS)
        positive(self, "num_codes")
        non_negative(self, "code_dim", "beta", "restart_after")
        check(0.0 < self.decay < 1.0, "decay", "must be in (0, 1)", self.decay)
        levels = list(self.fsq_levels)
        check(bool(levels) and all(level >= 2 for level in levels), "fsq_levels", "must be integers >= 2", levels)


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (B, D, H, W), straight-through: its gradient goes to the input
    indices: torch.Tensor  # (B, H, W) long
    loss: torch.Tensor  # scalar, to add to the reconstruction loss
    parts: dict[str, torch.Tensor]  # detached weighted terms of ``loss``: codebook, commitment


def _projection(latent_dim: int, code_dim: int) -> nn.Module:
    return nn.Identity() if code_dim == latent_dim else nn.Conv2d(latent_dim, code_dim, 1)


def _to_rows(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B, D, H, W) -> (B*H*W, D)


def _to_grid(rows: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # (B*H*W, D) -> (B, D, H, W)


# Distributed training: every process must see the same codebook, so batch statistics are
# summed over processes and random choices are taken from rank 0. No-ops in a single process.
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: torch.Tensor) -> None:
    if _distributed():
        dist.all_reduce(tensor)


def _broadcast(tensor: torch.Tensor) -> None:
    if _distributed():
        dist.broadcast(tensor, 0)


def nearest_code(rows: torch.Tensor, codebook: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """(N, d), (K, d) -> (N,) index of the nearest code in L2 (or cosine) distance, in float32.

    Chunked over rows so that a large batch times a large codebook does not need N*K memory.
    """
    rows, codebook = rows.float(), codebook.float()
    chunk = max(1, 2**24 // codebook.shape[0])
    code_sq = codebook.pow(2).sum(1)  # (K,)
    out = []
    for part in rows.split(chunk):
        if cosine:  # both sides unit-norm: smallest distance = largest dot product
            out.append((part @ codebook.t()).argmax(1))
        else:  # ||x||^2 is the same for every code, so it does not change the argmin
            out.append((code_sq - 2 * part @ codebook.t()).argmin(1))
    return torch.cat(out)


def kmeans(rows: torch.Tensor, k: int, iters: int = 10, cosine: bool = False) -> torch.Tensor:
    """(N, d) -> (k, d) centres: k-means++ seeding (Arthur & Vassilvitskii 2007), then Lloyd steps.

    Seeding by squared distance puts a centre in every well-separated cluster, where k random
    rows often leave a cluster without one. Empty clusters keep their centre.
    """
    n = rows.shape[0]
    centres = rows.new_empty(k, rows.shape[1])
    centres[0] = rows[torch.randint(n, (1,), device=rows.device)]
    closest = (rows - centres[0]).pow(2).sum(1)  # (N,) squared distance to the nearest centre so far
    for i in range(1, k):
        # + tiny: once every row coincides with a centre (N <= k), pick uniformly
        centres[i] = rows[torch.multinomial(closest + 1e-12, 1)]
        closest = torch.minimum(closest, (rows - centres[i]).pow(2).sum(1))
    for _ in range(iters):
        assign = nearest_code(rows, centres, cosine)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, assign, rows)  # (k, d)
        counts = torch.bincount(assign, minlength=k)  # (k,)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None].to(rows.dtype)
        if cosine:
            centres = F.normalize(centres, dim=1)
    return centres


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook quantizer (VQ-VAE), optionally with EMA codebook updates."""

    LAPLACE_EPS = 1e-5  # smoothing of EMA cluster sizes so that no code divides by zero
    KMEANS_ITERS = 10

    def __init__(self, config: QuantizerConfig, latent_dim: int):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim
        self.code_dim = config.code_dim or latent_dim
        self.project_in = _projection(latent_dim, self.code_dim)
        self.project_out = _projection(self.code_dim, latent_dim)
        k, d = config.num_codes, self.code_dim
        # codes of about unit norm, the scale of a fresh encoder's output; a tiny codebook
        # (taming's uniform(-1/K, 1/K)) starts with every vector mapped to the same code
        codebook = torch.randn(k, d) / math.sqrt(d)
        if config.ema:  # updated by moving averages, not by the optimiser
            self.register_buffer("codebook", codebook)
            # start as if every code had been the mean of one vector: unused codes stay in place
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialised", torch.tensor(not config.kmeans_init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training forwards so far
        self.register_buffer("last_used", torch.zeros(k, dtype=torch.long))  # value of steps when last chosen
        # A host-side copy of ``initialised`` once it is known to be True, so that later training
        # batches need not read the buffer back (a sync); loading a state dict forgets it.
        self._known_initialised = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialised = False

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    def _codes(self) -> torch.Tensor:
        codebook = self.codebook.float()  # (K, d)
        return F.normalize(codebook, dim=1) if self.config.cosine else codebook

    def _rows(self, z: torch.Tensor) -> torch.Tensor:
        rows = _to_rows(self.project_in(z)).float()  # (N, d)
        return F.normalize(rows, dim=1) if self.config.cosine else rows

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, c, h, w = z.shape
        assert c == self.latent_dim, f"expected (B, {self.latent_dim}, H, W), got {tuple(z.shape)}"
        # distances, losses and codebook updates in float32 whatever autocast would pick:
        # bf16 distances choose wrong codes and bf16 moving averages stop moving
        with torch.autocast(z.device.type, enabled=False):
            rows = self._rows(z)  # (N, d)
            if self.training:
                self._initialise_and_restart(rows.detach())
            codes_all = self._codes()  # (K, d)
            indices = nearest_code(rows.detach(), codes_all.detach(), self.config.cosine)  # (N,)
            codes = F.embedding(indices, codes_all)  # (N, d)
            commitment = self.config.beta * F.mse_loss(rows, codes.detach())  # moves the encoder
            if self.config.ema:
                codebook = torch.zeros((), device=z.device)
            else:
                codebook = F.mse_loss(codes, rows.detach())  # moves the codes
            quantized = rows + (codes - rows).detach()  # value of codes, gradient of rows
            if self.training:  # after the lookup: this batch is quantized with the codes it was matched to
                self._update(rows.detach(), indices)
        quantized = self.project_out(_to_grid(quantized.to(z.dtype), b, h, w))  # (B, D, H, W)
        parts = {"codebook": codebook.detach(), "commitment": commitment.detach()}
        return QuantizerOutput(quantized, indices.reshape(b, h, w), codebook + commitment, parts)

    @torch.no_grad()
    def to_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, H, W) nearest codes, without any training-time side effects."""
        b, _, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            return nearest_code(self._rows(z), self._codes(), self.config.cosine).reshape(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) code indices -> (B, D, H, W) decoder input."""
        _check_indices(indices, self.num_codes)
        b, h, w = indices.shape
        codes = F.embedding(indices.reshape(-1), self._codes())  # (N, d)
        return self.project_out(_to_grid(codes.to(self.codebook.dtype), b, h, w))

    @torch.no_grad()
    def _initialise_and_restart(self, rows: torch.Tensor) -> None:
        if self.config.kmeans_init and not self._known_initialised:
            if not bool(self.initialised):  # a host read, until the answer is known to be yes
                centres = kmeans(rows, self.num_codes, self.KMEANS_ITERS, self.config.cosine)
                _broadcast(centres)
                self._set_codes(torch.ones(self.num_codes, dtype=torch.bool, device=rows.device), centres)
                self.initialised.fill_(True)
            self._known_initialised = True
        if self.config.restart_after:
            # Every code draws a candidate row; only the dead ones take it. Drawing K rows each
            # step costs less than asking the device which codes are dead (a sync).
            dead = self.steps - self.last_used >= self.config.restart_after  # (K,) bool
            pick = torch.randint(rows.shape[0], (self.num_codes,), device=rows.device)
            fresh = rows[pick]  # (K, d)
            _broadcast(fresh)
            self._set_codes(dead, fresh)
            self.last_used.copy_(torch.where(dead, self.steps, self.last_used))  # a fresh window to prove themselves

    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        """Replace the codes where ``which`` (K,) bool is set by the rows of ``vectors`` (K, d)."""
        keep = ~which[:, None]
        self.codebook.data.copy_(torch.where(keep, self.codebook.data, vectors.to(self.codebook.dtype)))
        if self.config.ema:  # the moving averages must agree with the new codes
            self.cluster_size.copy_(torch.where(which, torch.ones_like(self.cluster_size), self.cluster_size))
            self.embed_sum.copy_(torch.where(keep, self.embed_sum, vectors.to(self.embed_sum.dtype)))

    @torch.no_grad()
    def _update(self, rows: torch.Tensor, indices: torch.Tensor) -> None:
        k = self.num_codes
        counts = torch.zeros(k, device=rows.device).scatter_add_(
            0, indices, torch.ones_like(indices, dtype=torch.float)
        )
        _all_reduce(counts)
        self.steps += 1
        self.last_used.copy_(torch.where(counts > 0, self.steps, self.last_used))
        if not self.config.ema:
            return
        sums = torch.zeros(k, rows.shape[1], device=rows.device).index_add_(0, indices, rows)  # (K, d)
        _all_reduce(sums)
        weight = 1.0 - self.config.decay
        cluster_size = self.cluster_size.float().lerp_(counts, weight)
        embed_sum = self.embed_sum.float().lerp_(sums, weight)
        total = cluster_size.sum()
        smoothed = (cluster_size + self.LAPLACE_EPS) / (total + k * self.LAPLACE_EPS) * total
        self.cluster_size.copy_(cluster_size)
        self.embed_sum.copy_(embed_sum)
        self.codebook.copy_(embed_sum / smoothed[:, None])


class FiniteScalarQuantizer(nn.Module):
    """FSQ: project to len(levels) channels, bound channel i to L_i values, round straight-through.

    The code index is the mixed-radix number of the per-channel levels, channel 0 least significant.
    """

    BOUND_EPS = 1e-3  # keeps tanh's limits just outside the outermost rounding boundary

    def __init__(self, config: QuantizerConfig, latent_dim: int):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim
        levels = torch.tensor(config.fsq_levels, dtype=torch.float64)
        d = len(config.fsq_levels)
        self.project_in = _projection(latent_dim, d)
        self.project_out = _projection(d, latent_dim)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), levels[:-1]]), 0)
        half_bound = (levels - 1) * (1 + self.BOUND_EPS) / 2
        offset = (levels % 2 == 0).double() * 0.5  # even L: levels sit at half-integers before the shift
        # derived from the config, so not saved in checkpoints
        for name, value in {
            "levels": levels,
            "basis": basis,
            "half_width": torch.div(levels, 2, rounding_mode="floor"),
            "half_bound": half_bound,
            "offset": offset,
            "shift": torch.atanh(offset / half_bound),
        }.items():
            self.register_buffer(name, value.float().reshape(1, d, 1, 1), persistent=False)
        self._num_codes = math.prod(config.fsq_levels)

    @property
    def num_codes(self) -> int:
        return self._num_codes

    def _round(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) -> integer levels in [-(L//2), (L-1)//2], straight-through, float32."""
        z = z.float()
        bounded = torch.tanh(z + self.shift) * self.half_bound - self.offset
        return bounded + (bounded.round() - bounded).detach()

    def _index(self, rounded: torch.Tensor) -> torch.Tensor:
        return ((rounded.detach() + self.half_width) * self.basis).sum(1).round().long()  # (B, H, W)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        assert z.ndim == 4 and z.shape[1] == self.latent_dim, (
            f"expected (B, {self.latent_dim}, H, W), got {tuple(z.shape)}"
        )
        with torch.autocast(z.device.type, enabled=False):
            rounded = self._round(self.project_in(z))  # (B, d, H, W)
            codes = rounded / self.half_width  # in [-1, 1]
        quantized = self.project_out(codes.to(z.dtype))  # (B, D, H, W)
        zero = torch.zeros((), device=z.device)
        return QuantizerOutput(quantized, self._index(rounded), zero, {"codebook": zero, "commitment": zero})

    @torch.no_grad()
    def to_indices(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):
            return self._index(self._round(self.project_in(z)))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, D, H, W), the inverse of the mixed-radix index."""
        _check_indices(indices, self.num_codes)
        digits = torch.div(indices[:, None].float(), self.basis, rounding_mode="floor") % self.levels  # (B, d, H, W)
        codes = (digits - self.half_width) / self.half_width
        dtype = next((p.dtype for p in self.project_out.parameters()), codes.dtype)
        return self.project_out(codes.to(dtype))


def _check_indices(indices: torch.Tensor, num_codes: int) -> None:
    if indices.ndim != 3 or indices.dtype != torch.long:
        raise GenforgeError(f"code indices must be a (B, H, W) long tensor, got {tuple(indices.shape)} {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise GenforgeError(f"code indices must be in [0, {num_codes}), got {int(indices.min())}..{int(indices.max())}")


QUANTIZERS: dict[str, type[nn.Module]] = {"vq": VectorQuantizer, "fsq": FiniteScalarQuantizer}


def build_quantizer(config: QuantizerConfig, latent_dim: int) -> VectorQuantizer | FiniteScalarQuantizer:
    return QUANTIZERS[config.method](config, latent_dim)


class CodebookHealth:
    """Code usage over the last ``window`` batches (a single batch undercounts a large codebook).

    A ring buffer of per-batch code counts, kept on the device of the indices it counts:
    ``update`` runs every training step and never waits for the device; the summaries read it
    back, at log time only.
    """

    def __init__(self, num_codes: int, window: int = 100, device: torch.device | str = "cpu"):
        if num_codes <= 0 or window <= 0:
            raise GenforgeError(f"CodebookHealth needs positive num_codes and window, got {num_codes}, {window}")
        self.num_codes = num_codes
        self.counts = torch.zeros(window, num_codes, dtype=torch.long, device=device)  # (window, K)
        self.batches = 0

    def update(self, indices: torch.Tensor) -> None:
        """Count the codes of one batch of indices (any shape, values in [0, num_codes))."""
        flat = indices.detach().reshape(-1).to(self.counts.device, torch.long)
        row = self.counts[self.batches % self.counts.shape[0]]  # a view: written in place
        row.zero_().scatter_add_(0, flat, torch.ones_like(flat))
        self.batches += 1

    def _totals(self) -> torch.Tensor:
        return self.counts.sum(0).cpu()  # (K,); slots not yet written are zero

    def usage(self) -> float:
        """Fraction of codes chosen at least once in the window."""
        return int((self._totals() > 0).sum()) / self.num_codes

    def perplexity(self) -> float:
        """exp(entropy) of the code distribution in the window: the effective number of codes."""
        totals = self._totals().double()
        if totals.sum() == 0:
            return 0.0
        p = totals / totals.sum()
        return float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum()))

    def dead_codes(self) -> int:
        return int((self._totals() == 0).sum())

    def summary(self) -> dict[str, float]:
        return {
            "codebook_usage": self.usage(),
            "codebook_perplexity": self.perplexity(),
            "dead_codes": self.dead_codes(),
        }
