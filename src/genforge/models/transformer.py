"""What the two priors over a VQ-VAE's code grid share: config, transformer blocks, embeddings,
class slots with classifier-free guidance, logit filtering and sampling.

Both priors (``prior.TransformerPrior``, autoregressive; ``maskgit.MaskGIT``, parallel decoding)
are a ``CodeTransformer``: a class token followed by code tokens, each code token carrying the
learned row + column embedding of its grid position, through pre-LayerNorm blocks to a head over
the codebook. They answer the same two methods, so the family that trains them never asks which
one it holds:

    loss(codes (B, H, W), labels, generator) -> (scalar, parts)
    generate(n, labels=None, generator=None, **options) -> codes (n, H, W)

and each validates its own sampling options (``SAMPLING_OPTIONS``).

Values are checked where they come from, not on every training step: a code grid's range and a
label's class are read back to the host (a sync that stalls a GPU's queue) only outside training
mode (sampling, held-out losses, ``nll``); in training mode the family's data was checked once
when it was made (``check_codes``), and the step checks shapes and types only.

Classifier-free guidance (Ho & Salimans 2022): during training the class is replaced by an extra
"null class" with probability ``class_dropout``; at sampling, logits are mixed as
uncond + s * (cond - uncond) in one batched pass. An unconditional model is the special case
num_classes = 0, whose only "class" is that null entry. Structure after karpathy/nanoGPT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genforge.config import check, fraction, non_negative, positive
from genforge.draws import rand
from genforge.errors import GenforgeError


@dataclass
class TransformerConfig:
    vocab_size: int = 512  # codebook size of the VQ-VAE
    grid_h: int = 8
    grid_w: int = 8
    num_classes: int = 0  # 0: unconditional
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1  # on embeddings, attention and MLP outputs
    # On the attention probabilities. 0 lets PyTorch use its fused kernel on CPU in training too
    # (with dropout there, it falls back to the unfused "math" attention: ~15% slower steps).
    attn_dropout: float = 0.0
    class_dropout: float = 0.1  # probability of training on the null class (for guidance)

    def __post_init__(self):
        positive(self, "vocab_size", "grid_h", "grid_w", "n_layer", "n_head", "n_embd")
        non_negative(self, "num_classes")
        fraction(self, "dropout", "attn_dropout", "class_dropout")
        check(self.n_embd % self.n_head == 0, "n_head", f"must divide n_embd ({self.n_embd})", self.n_head)


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set logits outside the top-k and/or the top-p nucleus to -inf. (..., V) -> (..., V).

    top_p keeps the smallest set of tokens whose probabilities sum to at least p (Holtzman et al.
    2020); the most likely token is always kept, so a row never becomes all -inf.
    """
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens before it already reach p; the exclusive cumsum keeps the
        # token that crosses p and always keeps the first.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row. (B, V) -> (B,) long. temperature 0 means greedy (argmax)."""
    assert logits.ndim == 2, f"expected (B, V) logits, got {tuple(logits.shape)}"
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


def guided(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """(2B, ..., V) rows [cond; uncond] -> (B, ..., V) uncond + s * (cond - uncond)."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + cfg_scale * (cond - uncond)


def class_slots(labels, n: int, num_classes: int, device, check_range: bool = True) -> torch.Tensor:
    """User labels (None, int, sequence or tensor) -> (n,) long class-embedding rows.

    None selects the null class (row num_classes), which for an unconditional model is the start
    token and for a conditional one means "any class". ``check_range`` reads the labels back to
    the host to refuse a class outside [0, num_classes); the training step skips it.
    """
    if labels is None:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    if num_classes == 0:
        raise GenforgeError("labels were given but the model is unconditional (num_classes = 0)")
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise GenforgeError(f"expected {n} labels (one per sample), got shape {tuple(labels.shape)}")
    if check_range and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        low, high = int(labels.min()), int(labels.max())
        raise GenforgeError(f"labels must be in [0, {num_classes}), got values {low}..{high}")
    return labels


def drop_classes(slots: torch.Tensor, num_classes: int, p: float, generator=None) -> torch.Tensor:
    """Training-time classifier-free dropout: replace each label by the null class with prob p."""
    if p == 0 or num_classes == 0:
        return slots
    drop = rand(tuple(slots.shape), generator, slots.device) < p
    return slots.masked_fill(drop, num_classes)


def check_grid(indices: torch.Tensor, cfg: TransformerConfig, values: bool = True) -> None:
    """Refuse a code grid of the wrong shape, type or (with ``values``, a host read) range."""
    expected = (cfg.grid_h, cfg.grid_w)
    if indices.ndim != 3 or tuple(indices.shape[1:]) != expected:
        raise GenforgeError(f"expected code grids of shape (B, {cfg.grid_h}, {cfg.grid_w}), got {tuple(indices.shape)}")
    if indices.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise GenforgeError(f"code grids must be integers, got {indices.dtype}")
    if values:
        check_codes(indices, cfg.vocab_size)


def check_codes(codes, vocab_size: int) -> None:
    """Refuse code indices (a tensor or an array, any shape) outside [0, vocab_size)."""
    empty = codes.size == 0 if isinstance(codes, np.ndarray) else codes.numel() == 0
    if empty:
        return
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= vocab_size:
        raise GenforgeError(f"code indices must be in [0, {vocab_size}), got {low}..{high}")


def check_sampling(options: dict[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """The sampling options a network takes, validated; ``None`` values mean "the default"."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise GenforgeError(f"sampling option '{unknown[0]}' does not apply to {what} (it takes: {', '.join(allowed)})")
    if "temperature" in given and not (math.isfinite(given["temperature"]) and given["temperature"] >= 0):
        raise GenforgeError(f"temperature must be a finite number >= 0, got {given['temperature']!r}")
    if "top_k" in given and (not isinstance(given["top_k"], int) or given["top_k"] < 1):
        raise GenforgeError(f"top_k must be a positive integer, got {given['top_k']!r}")
    if "top_p" in given and not 0.0 < given["top_p"] <= 1.0:
        raise GenforgeError(f"top_p must be in (0, 1], got {given['top_p']!r}")
    if "cfg_scale" in given and not math.isfinite(given["cfg_scale"]):
        raise GenforgeError(f"cfg_scale must be a finite number, got {given['cfg_scale']!r}")
    if "steps" in given and (not isinstance(given["steps"], int) or given["steps"] < 1):
        raise GenforgeError(f"steps must be a positive integer, got {given['steps']!r}")
    return given


# What ``genforge tune`` tries for each option (the network's default first): a coordinate
# search moves one option at a time through these, keeping the best.
TUNE_CFG_SCALES = (1.0, 1.25, 1.5, 2.0, 3.0)
TUNE_TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 1.1)
TUNE_TOP_P = (None, 0.98, 0.95, 0.9, 0.8)


def tune_top_k(vocab_size: int) -> tuple[int | None, ...]:
    """None (every code), then 1/2, 1/4, 1/8 and 1/16 of the codebook."""
    ks = sorted({max(1, vocab_size // d) for d in (2, 4, 8, 16)} - {vocab_size}, reverse=True)
    return (None, *ks)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused scaled-dot-product kernel); causal or bidirectional."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, attn_dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool, cache=None, pos: int = 0) -> torch.Tensor:
        """x (B, L, C) -> (B, L, C). cache: (k, v) buffers (B, nh, T_max, hd); x sits at pos."""
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hd)
        k = k.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            # Preallocated (B, nh, T_max, hd) buffers: write this chunk, attend over the prefix.
            k_buf, v_buf = cache
            k_buf[:, :, pos : pos + L] = k
            v_buf[:, :, pos : pos + L] = v
            k, v = k_buf[:, :, : pos + L], v_buf[:, :, : pos + L]
            # A single new query may see every cached key; a longer chunk is only supported from
            # position 0, where SDPA's top-left causal mask is the right one.
            assert L == 1 or pos == 0, "cached attention takes one token at a time after the first chunk"
            causal = causal and L > 1
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, nh, L, hd)
        y = y.transpose(1, 2).contiguous().view(B, L, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, attn_dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout, attn_dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor, causal: bool = True, cache=None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal, cache, pos)
        return x + self.mlp(self.ln_2(x))


class CodeTransformer(nn.Module):
    """Embeddings, blocks and head shared by both priors; subclasses define the token layout.

    ``token_rows`` is the size of the token embedding (the codebook, plus a [MASK] token for
    MaskGIT); the head always predicts one of the ``vocab_size`` codes.
    """

    SAMPLING_OPTIONS: tuple[str, ...] = ()
    LOSS_IS_LIKELIHOOD = False  # whether ``loss`` is the data's negative log-likelihood

    def __init__(self, cfg: TransformerConfig, token_rows: int):
        super().__init__()
        self.cfg = cfg
        self.seq_len = cfg.grid_h * cfg.grid_w
        self.tok_emb = nn.Embedding(token_rows, cfg.n_embd)
        # Rows 0..num_classes-1 are classes, row num_classes is the null class / start token.
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.n_embd)
        self.row_emb = nn.Embedding(cfg.grid_h, cfg.n_embd)
        self.col_emb = nn.Embedding(cfg.grid_w, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.attn_dropout) for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # Not tied to tok_emb: safetensors refuses tensors that share memory.
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
        for name, p in self.named_parameters():
            if p.ndim >= 2:  # linear and embedding weights
                std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)  # LayerNorm weights keep their default of one

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def positions(self, length: int) -> torch.Tensor:
        """Row + column embedding of raster positions 0..length-1. -> (length, C)"""
        t = torch.arange(length, device=self.row_emb.weight.device)
        return self.row_emb(t // self.cfg.grid_w) + self.col_emb(t % self.cfg.grid_w)

    def slots(self, labels, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class-embedding rows for a batch; in training, with classifier-free dropout (and no
        host read of the labels: see the module's docstring)."""
        slots = class_slots(labels, n, self.cfg.num_classes, self.device, check_range=not self.training)
        if self.training:
            slots = drop_classes(slots, self.cfg.num_classes, self.cfg.class_dropout, generator)
        return slots

    def trunk(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, L, C) embedded sequence -> (B, L, C) final hidden states."""
        for block in self.blocks:
            x = block(x, causal=causal)
        return self.ln_f(x)

    # The interface both priors answer.

    def loss(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def generate(self, n: int, labels=None, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Refuse options this network does not take, and bad values, before any work."""
        return check_sampling(options, self.SAMPLING_OPTIONS, f"{self.NAME} priors")

    def sampling_space(self) -> dict[str, tuple]:
        """Values ``genforge tune`` tries per option, in the order it moves through them, each
        option's default first. Guidance needs classes; subclasses add their own options."""
        space: dict[str, tuple] = {"cfg_scale": TUNE_CFG_SCALES} if self.cfg.num_classes > 0 else {}
        return {**space, "temperature": TUNE_TEMPERATURES, "top_k": tune_top_k(self.cfg.vocab_size)}
