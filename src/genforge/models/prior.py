"""Autoregressive prior over a VQ-VAE's code grid: a GPT-style causal transformer.

The grid of code indices (B, H, W) is read in raster order as a sequence of T = H*W tokens and
modelled as p(x) = prod_t p(x_t | x_<t, class). The sequence fed to the transformer is
[cond, x_0, ..., x_{T-2}]: slot 0 holds a start token (unconditional) or a class token, and the
output at slot t predicts x_t. Each slot also gets the learned row + column embedding of the code
it predicts, so the model always knows where in the image the next code goes.

Classifier-free guidance (Ho & Salimans 2022): during training the class is replaced by an extra
"null class" with probability ``class_dropout``; at sampling, logits are mixed as
uncond + s * (cond - uncond) in one batched pass. An unconditional model is the special case
num_classes = 0, whose only "class" is that null entry, i.e. the start token.

Sampling keeps a key/value cache so that each new token costs one position, not the prefix.
Structure after karpathy/nanoGPT ``model.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from genforge.errors import GenforgeError


@dataclass
class PriorConfig:
    vocab_size: int = 512  # codebook size of the VQ-VAE
    grid_h: int = 8
    grid_w: int = 8
    num_classes: int = 0  # 0: unconditional
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    class_dropout: float = 0.1  # probability of training on the null class (for guidance)

    def __post_init__(self):
        check_transformer_fields(self, "model")


def check_transformer_fields(cfg, section: str) -> None:
    """Validation shared by the AR prior and MaskGIT, whose configs have the same core fields."""
    for name in ("vocab_size", "grid_h", "grid_w", "n_layer", "n_head", "n_embd"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise GenforgeError(f"{section}.{name} must be a positive integer, got {value!r}")
    if not isinstance(cfg.num_classes, int) or cfg.num_classes < 0:
        raise GenforgeError(f"{section}.num_classes must be >= 0 (0 = unconditional), got {cfg.num_classes!r}")
    if cfg.n_embd % cfg.n_head != 0:
        raise GenforgeError(f"{section}.n_head must divide {section}.n_embd, got {cfg.n_head} and {cfg.n_embd}")
    for name in ("dropout", "class_dropout"):
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            raise GenforgeError(f"{section}.{name} must be in [0, 1), got {value!r}")


# ---------------------------------------------------------------------------------------------
# Sampling helpers (shared with MaskGIT)
# ---------------------------------------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set logits outside the top-k and/or the top-p nucleus to -inf. (..., V) -> (..., V).

    top_p keeps the smallest set of tokens whose probabilities sum to at least p (Holtzman et al.
    2020); the most likely token is always kept, so a row never becomes all -inf.
    """
    vocab = logits.shape[-1]
    if top_k is not None:
        if not isinstance(top_k, int) or top_k < 1:
            raise GenforgeError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k < vocab:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise GenforgeError(f"top_p must be in (0, 1], got {top_p!r}")
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            # Drop a token when the tokens before it already reach p; exclusive cumsum keeps the
            # token that crosses p and always keeps the first.
            drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
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
    if temperature < 0:
        raise GenforgeError(f"temperature must be >= 0, got {temperature!r}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def guided(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """(2B, ..., V) rows [cond; uncond] -> (B, ..., V) uncond + s * (cond - uncond)."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + cfg_scale * (cond - uncond)


def class_slots(labels, n: int, num_classes: int, device) -> torch.Tensor:
    """User labels (None, int, sequence or tensor) -> (n,) long class-embedding rows.

    None selects the null class (row num_classes), which for an unconditional model is the start
    token and for a conditional one means "any class".
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
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        low, high = int(labels.min()), int(labels.max())
        raise GenforgeError(f"labels must be in [0, {num_classes}), got values {low}..{high}")
    return labels


def drop_classes(slots: torch.Tensor, num_classes: int, p: float) -> torch.Tensor:
    """Training-time classifier-free dropout: replace each label by the null class with prob p."""
    if p == 0 or num_classes == 0:
        return slots
    drop = torch.rand(slots.shape, device=slots.device) < p
    return slots.masked_fill(drop, num_classes)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal for the AR prior, bidirectional for MaskGIT."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
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
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
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

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor, causal: bool = True, cache=None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal, cache, pos)
        return x + self.mlp(self.ln_2(x))


def init_transformer_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
    for name, p in model.named_parameters():
        if p.ndim >= 2:  # linear and embedding weights
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
            nn.init.normal_(p, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)  # LayerNorm weights keep their default of one


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class TransformerPrior(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.seq_len = cfg.grid_h * cfg.grid_w
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        # Rows 0..num_classes-1 are classes, row num_classes is the null class / start token.
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.n_embd)
        self.row_emb = nn.Embedding(cfg.grid_h, cfg.n_embd)
        self.col_emb = nn.Embedding(cfg.grid_w, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.n_embd, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # Not tied to tok_emb: safetensors refuses tensors that share memory.
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        init_transformer_weights(self, cfg.n_layer)

    def positions(self, length: int) -> torch.Tensor:
        """Row + column embedding of raster positions 0..length-1. -> (length, C)"""
        t = torch.arange(length, device=self.row_emb.weight.device)
        return self.row_emb(t // self.cfg.grid_w) + self.col_emb(t % self.cfg.grid_w)

    def _embed(self, indices: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Codes (B, L-1) and class slots (B,) -> input sequence [cond, x_0..x_{L-2}] (B, L, C)."""
        cond = self.class_emb(slots)[:, None]  # (B, 1, C)
        x = torch.cat([cond, self.tok_emb(indices)], dim=1)
        return self.drop(x + self.positions(x.shape[1]))

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, causal=True)
        return self.ln_f(x)

    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, T) in raster order -> logits (B, T, V); logits[:, t] predicts indices[:, t]
        from indices[:, :t] and the class. T may be shorter than the grid."""
        B, T = indices.shape
        if not 1 <= T <= self.seq_len:
            grid = f"{self.cfg.grid_h}x{self.cfg.grid_w}"
            raise GenforgeError(f"prior: sequence length {T} is outside 1..{self.seq_len} (grid {grid})")
        slots = class_slots(labels, B, self.cfg.num_classes, indices.device)
        if self.training:
            slots = drop_classes(slots, self.cfg.num_classes, self.cfg.class_dropout)
        logits = self.head(self._trunk(self._embed(indices[:, :-1], slots)))
        assert logits.shape == (B, T, self.cfg.vocab_size)
        return logits

    def nll(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code grids (B, H, W) -> mean negative log-likelihood in nats per code (scalar)."""
        check_grid(indices, self.cfg)
        flat = indices.reshape(indices.shape[0], -1).long()  # (B, T)
        logits = self(flat, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat.reshape(-1))

    # -----------------------------------------------------------------------------------------
    # Sampling
    # -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        n: int,
        *,
        labels=None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Sample n code grids -> (n, H, W) long. Runs in eval mode (restored afterwards).

        labels: None (null class), one int for all, or n ints. cfg_scale != 1 needs labels and
        mixes conditional and null-class logits; use_cache=False recomputes the whole prefix at
        every step (slow, kept for tests and benchmarks). Batches of batch_size draw from the one
        generator in turn, so a seed and a batch_size fix the result.
        """
        device = self.head.weight.device
        if n < 0:
            raise GenforgeError(f"number of samples must be >= 0, got {n}")
        slots = class_slots(labels, n, self.cfg.num_classes, device)
        if cfg_scale != 1.0 and labels is None:
            raise GenforgeError("cfg_scale != 1 needs class labels (classifier-free guidance on a class)")
        batch_size = batch_size or max(n, 1)
        if batch_size < 1:
            raise GenforgeError(f"batch_size must be positive, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            sampling = (temperature, top_k, top_p, cfg_scale, use_cache, generator)
            out = [self._generate_batch(slots[i : i + batch_size], *sampling) for i in range(0, n, batch_size)]
        finally:
            self.train(was_training)
        grids = torch.cat(out) if out else torch.empty(0, self.seq_len, dtype=torch.long, device=device)
        return grids.view(n, self.cfg.grid_h, self.cfg.grid_w)

    def _generate_batch(self, slots, temperature, top_k, top_p, cfg_scale, use_cache, generator) -> torch.Tensor:
        B, T = slots.shape[0], self.seq_len
        guide = cfg_scale != 1.0
        if guide:  # rows [cond; null] share every forward pass
            slots = torch.cat([slots, torch.full_like(slots, self.cfg.num_classes)])
        rows = slots.shape[0]
        tokens = torch.empty(B, T, dtype=torch.long, device=slots.device)
        pos_emb = self.positions(T)  # (T, C)
        if use_cache:
            C, nh = self.cfg.n_embd, self.cfg.n_head
            buffers = torch.empty(len(self.blocks), 2, rows, nh, T, C // nh, device=slots.device, dtype=pos_emb.dtype)
            x = self.class_emb(slots) + pos_emb[0]  # (rows, C): slot 0
        for t in range(T):
            if use_cache:
                h = x[:, None]  # (rows, 1, C)
                for i, block in enumerate(self.blocks):
                    h = block(h, causal=True, cache=(buffers[i, 0], buffers[i, 1]), pos=t)
                logits = self.head(self.ln_f(h[:, -1]))  # (rows, V)
            else:
                prefix = tokens[:, :t].repeat(2, 1) if guide else tokens[:, :t]
                h = self._trunk(self._embed(prefix, slots))  # (rows, t+1, C)
                logits = self.head(h[:, -1])
            if guide:
                logits = guided(logits, cfg_scale)
            tokens[:, t] = sample_from_logits(logits, temperature, top_k, top_p, generator)
            if use_cache and t + 1 < T:
                nxt = tokens[:, t].repeat(2) if guide else tokens[:, t]
                x = self.tok_emb(nxt) + pos_emb[t + 1]
        return tokens


def check_grid(indices: torch.Tensor, cfg) -> None:
    """Refuse a code grid of the wrong shape, type or range with one clear message."""
    expected = (cfg.grid_h, cfg.grid_w)
    if indices.ndim != 3 or tuple(indices.shape[1:]) != expected:
        raise GenforgeError(f"expected code grids of shape (B, {cfg.grid_h}, {cfg.grid_w}), got {tuple(indices.shape)}")
    if indices.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise GenforgeError(f"code grids must be integers, got {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= cfg.vocab_size):
        raise GenforgeError(
            f"code indices must be in [0, {cfg.vocab_size}), got {int(indices.min())}..{int(indices.max())}"
        )
