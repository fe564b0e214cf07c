"""Autoregressive prior over a VQ-VAE's code grid: a GPT-style causal transformer.

The grid of code indices (B, H, W) is read in raster order as a sequence of T = H*W tokens and
modelled as p(x) = prod_t p(x_t | x_<t, class). The sequence fed to the transformer is
[cond, x_0, ..., x_{T-2}]: slot 0 holds a start token (unconditional) or a class token, and the
output at slot t predicts x_t. Each slot also gets the learned row + column embedding of the code
it predicts, so the model always knows where in the image the next code goes.

Sampling keeps a key/value cache so that each new token costs one position, not the prefix. The
blocks, embeddings, guidance and logit filtering are shared with MaskGIT (``transformer.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genforge.errors import GenforgeError
from genforge.models.transformer import (
    TUNE_TOP_P,
    CodeTransformer,
    TransformerConfig,
    check_grid,
    guided,
    sample_from_logits,
)

PriorConfig = TransformerConfig  # the AR prior has no fields beyond the shared ones


class TransformerPrior(CodeTransformer):
    NAME = "ar"
    SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "cfg_scale", "use_cache")
    LOSS_IS_LIKELIHOOD = True

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg, token_rows=cfg.vocab_size)

    def _embed(self, indices: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Codes (B, L-1) and class slots (B,) -> input sequence [cond, x_0..x_{L-2}] (B, L, C)."""
        cond = self.class_emb(slots)[:, None]  # (B, 1, C)
        x = torch.cat([cond, self.tok_emb(indices)], dim=1)
        return self.drop(x + self.positions(x.shape[1]))

    def forward(
        self, indices: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Codes (B, T) in raster order -> logits (B, T, V); logits[:, t] predicts indices[:, t]
        from indices[:, :t] and the class. T may be shorter than the grid."""
        B, T = indices.shape
        if not 1 <= T <= self.seq_len:
            grid = f"{self.cfg.grid_h}x{self.cfg.grid_w}"
            raise GenforgeError(f"prior: sequence length {T} is outside 1..{self.seq_len} (grid {grid})")
        slots = self.slots(labels, B, generator)
        logits = self.head(self.trunk(self._embed(indices[:, :-1], slots), causal=True))
        assert logits.shape == (B, T, self.cfg.vocab_size)
        return logits

    def loss(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Code grids (B, H, W) -> mean negative log-likelihood in nats per code, and its parts.
        In training mode the codes' values are not read back (see ``transformer.py``)."""
        check_grid(codes, self.cfg, values=not self.training)
        flat = codes.reshape(codes.shape[0], -1).long()  # (B, T)
        logits = self(flat, labels, generator)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat.reshape(-1))
        return nll, {"nll": nll.detach()}

    def sampling_space(self) -> dict[str, tuple]:
        return {**super().sampling_space(), "top_p": TUNE_TOP_P}

    def nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code grids (B, H, W) -> mean negative log-likelihood in nats per code (scalar); the
        codes are checked in full, whatever the mode."""
        check_grid(codes, self.cfg)
        return self.loss(codes, labels)[0]

    # -----------------------------------------------------------------------------------------
    # Sampling
    # -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self, n: int, labels=None, generator: torch.Generator | None = None, *, batch_size: int | None = None, **options
    ) -> torch.Tensor:
        """Sample n code grids -> (n, H, W) long. Runs in eval mode (restored afterwards).

        labels: None (null class), one int for all, or n ints. Options: temperature (1; 0 is
        greedy), top_k, top_p, cfg_scale (1 = no guidance; needs labels), use_cache (True;
        False recomputes the whole prefix at every step, for tests and benchmarks). Batches of
        batch_size draw from the one generator in turn, so a seed and a batch_size fix the result.
        """
        opts = self.check_options(options)
        temperature, cfg_scale = opts.get("temperature", 1.0), opts.get("cfg_scale", 1.0)
        if n < 0:
            raise GenforgeError(f"number of samples must be >= 0, got {n}")
        if cfg_scale != 1.0 and labels is None:
            raise GenforgeError("cfg_scale != 1 needs class labels (classifier-free guidance on a class)")
        batch_size = batch_size or max(n, 1)
        was_training = self.training
        self.eval()
        try:
            slots = self.slots(labels, n)
            sampling = (temperature, opts.get("top_k"), opts.get("top_p"), cfg_scale, opts.get("use_cache", True))
            out = [
                self._generate_batch(slots[i : i + batch_size], *sampling, generator) for i in range(0, n, batch_size)
            ]
        finally:
            self.train(was_training)
        grids = torch.cat(out) if out else torch.empty(0, self.seq_len, dtype=torch.long, device=self.device)
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
            shape = (len(self.blocks), 2, rows, nh, T, C // nh)
            buffers = torch.empty(shape, device=slots.device, dtype=pos_emb.dtype)
            x = self.class_emb(slots) + pos_emb[0]  # (rows, C): slot 0
        for t in range(T):
            if use_cache:
                h = x[:, None]  # (rows, 1, C)
                for i, block in enumerate(self.blocks):
                    h = block(h, causal=True, cache=(buffers[i, 0], buffers[i, 1]), pos=t)
                logits = self.head(self.ln_f(h[:, -1]))  # (rows, V)
            else:
                prefix = tokens[:, :t].repeat(2, 1) if guide else tokens[:, :t]
                h = self.trunk(self._embed(prefix, slots), causal=True)  # (rows, t+1, C)
                logits = self.head(h[:, -1])
            if guide:
                logits = guided(logits, cfg_scale)
            tokens[:, t] = sample_from_logits(logits, temperature, top_k, top_p, generator)
            if use_cache and t + 1 < T:
                nxt = tokens[:, t].repeat(2) if guide else tokens[:, t]
                x = self.tok_emb(nxt) + pos_emb[t + 1]
        return tokens
