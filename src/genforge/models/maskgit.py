"""MaskGIT prior (Chang et al. 2022): a bidirectional transformer that fills in masked codes.

Training hides a random subset of a code grid behind a [MASK] token, with the masked fraction
drawn from the cosine schedule gamma(r) = cos(pi/2 * r), r ~ U(0, 1), and predicts the hidden
codes (cross-entropy on masked positions only). Sampling starts from an all-masked grid and, in
a few steps, predicts every masked code at once, keeps the most confident predictions and
re-masks the rest so that the number still masked follows the same schedule.

Conditioning and positions as in the autoregressive prior (prior.py): a class token (or the null
class, for classifier-free guidance and for unconditional models) is prepended to the sequence,
and every grid token gets a learned row + column embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genforge.config import check, non_negative
from genforge.draws import Source, rand
from genforge.errors import GenforgeError
from genforge.models.transformer import CodeTransformer, TransformerConfig, check_grid, guided, sample_from_logits


@dataclass
class MaskGITConfig(TransformerConfig):
    """The shared transformer fields (the [MASK] token is id vocab_size), plus parallel decoding's."""

    steps: int = 8  # default number of parallel decoding steps
    choice_temperature: float = 4.5  # gumbel noise on confidences at step 0, annealed to 0 (reference value)

    def __post_init__(self):
        super().__post_init__()
        check(self.steps >= 1, "steps", "must be a positive integer", self.steps)
        non_negative(self, "choice_temperature")


def mask_schedule(ratio: float | torch.Tensor) -> float | torch.Tensor:
    """Cosine schedule: the fraction of tokens masked at progress ratio in [0, 1]."""
    if isinstance(ratio, torch.Tensor):
        return torch.cos(math.pi / 2 * ratio)
    return math.cos(math.pi / 2 * ratio)


def training_mask_counts(r: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Draws r (B,) in [0, 1) -> number of tokens to mask (B,) = ceil(cos(pi/2 r) * T), in [1, T]."""
    return torch.ceil(mask_schedule(r) * seq_len).long().clamp(1, seq_len)


class MaskGIT(CodeTransformer):
    NAME = "maskgit"
    SAMPLING_OPTIONS = ("temperature", "top_k", "cfg_scale", "steps")
    LOSS_IS_LIKELIHOOD = False  # a masked-token cross-entropy, not the data's likelihood

    def __init__(self, cfg: MaskGITConfig):
        super().__init__(cfg, token_rows=cfg.vocab_size + 1)  # + [MASK]; the head never predicts it
        self.mask_id = cfg.vocab_size

    def forward(
        self, indices: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Codes (B, T) in raster order, [MASK] = vocab_size allowed -> logits (B, T, V)."""
        B, T = indices.shape
        if T != self.seq_len:
            raise GenforgeError(f"maskgit: expected {self.seq_len} codes per sample, got {T}")
        return self._logits(indices, self.slots(labels, B, generator))

    def _logits(self, indices: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) and class-embedding rows (B,), null class included -> logits (B, T, V)."""
        B, T = indices.shape
        x = torch.cat([self.class_emb(slots)[:, None], self.tok_emb(indices.long()) + self.positions(T)], dim=1)
        logits = self.head(self.trunk(self.drop(x), causal=False)[:, 1:])  # (B, T, V)
        assert logits.shape == (B, T, self.cfg.vocab_size)
        return logits

    def random_mask(self, batch: int, generator: Source = None) -> torch.Tensor:
        """Training mask (B, T) bool: per sample, ceil(cos(pi/2 r) T) positions chosen uniformly."""
        device = self.device
        counts = training_mask_counts(rand((batch,), generator, device), self.seq_len)
        # The rank of each position in a random permutation; the first `count` ranks are masked.
        ranks = rand((batch, self.seq_len), generator, device).argsort(1).argsort(1)
        return ranks < counts[:, None]

    def loss(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Code grids (B, H, W) -> (mean cross-entropy over masked positions, parts).

        The mean is a masked sum over every position, not ``logits[mask]``: boolean indexing sizes
        its result from the data, a host read on every step. In training mode the codes' values
        are not read back either (see ``transformer.py``).
        """
        check_grid(codes, self.cfg, values=not self.training)
        flat = codes.reshape(codes.shape[0], -1).long()  # (B, T)
        mask = self.random_mask(flat.shape[0], generator)  # (B, T); at least one position per row
        logits = self(flat.masked_fill(mask, self.mask_id), labels, generator)  # (B, T, V)
        per_code = F.cross_entropy(logits.flatten(0, 1).float(), flat.reshape(-1), reduction="none")  # (B*T,)
        weights = mask.reshape(-1).float()
        loss = (per_code * weights).sum() / weights.sum()
        return loss, {"masked_ce": loss.detach(), "mask_ratio": weights.mean()}

    def sampling_space(self) -> dict[str, tuple]:
        steps = (self.cfg.steps, *sorted({4, 8, 12, 16} - {self.cfg.steps}))
        return {**super().sampling_space(), "steps": steps}

    @torch.inference_mode()
    def generate(self, n: int, labels=None, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """Sample n code grids in ``steps`` parallel steps (default cfg.steps) -> (n, H, W) long.

        labels: None (null class), one int for all, or n ints. Options: temperature (1), top_k,
        cfg_scale (1 = no guidance; needs labels), steps. Runs in eval mode (restored).
        """
        opts = self.check_options(options)
        steps = opts.get("steps", self.cfg.steps)
        cfg_scale = opts.get("cfg_scale", 1.0)
        if n < 0:
            raise GenforgeError(f"number of samples must be >= 0, got {n}")
        if cfg_scale != 1.0 and labels is None:
            raise GenforgeError("cfg_scale != 1 needs class labels (classifier-free guidance on a class)")
        was_training = self.training
        self.eval()
        try:
            slots = self.slots(labels, n)
            guide = cfg_scale != 1.0
            if guide:  # rows [cond; null] share every forward pass
                slots = torch.cat([slots, torch.full_like(slots, self.cfg.num_classes)])
            temperature, top_k = opts.get("temperature", 1.0), opts.get("top_k")
            tokens = self._decode(n, slots, steps, temperature, top_k, cfg_scale if guide else None, generator)
        finally:
            self.train(was_training)
        return tokens.view(n, self.cfg.grid_h, self.cfg.grid_w)

    def _decode(self, n, slots, steps, temperature, top_k, cfg_scale, generator) -> torch.Tensor:
        T, V = self.seq_len, self.cfg.vocab_size
        tokens = torch.full((n, T), self.mask_id, dtype=torch.long, device=slots.device)
        masked = T  # every row has the same number of masked tokens at every step
        for step in range(steps):
            logits = self._logits(tokens.repeat(2, 1) if cfg_scale is not None else tokens, slots)  # (rows, T, V)
            if cfg_scale is not None:
                logits = guided(logits, cfg_scale)  # (n, T, V)
            unknown = tokens == self.mask_id
            sampled = sample_from_logits(logits.reshape(-1, V), temperature, top_k, None, generator).view(n, T)
            sampled = torch.where(unknown, sampled, tokens)
            if step == steps - 1:
                return sampled
            ratio = (step + 1) / steps
            # At least one token is revealed per step and at least one stays masked until the last.
            still_masked = max(1, min(masked - 1, math.floor(T * mask_schedule(ratio))))
            log_probs = logits.float().log_softmax(-1).gather(-1, sampled[..., None]).squeeze(-1)  # (n, T)
            uniform = torch.rand(n, T, generator=generator, device=tokens.device).clamp_min(1e-20)
            gumbel = -torch.log(-torch.log(uniform))
            confidence = log_probs + self.cfg.choice_temperature * (1.0 - ratio) * gumbel
            confidence = confidence.masked_fill(~unknown, float("inf"))  # known tokens stay known
            remask = torch.topk(confidence, still_masked, dim=1, largest=False).indices  # (n, still_masked)
            tokens = sampled.scatter(1, remask, self.mask_id)
            masked = still_masked
        raise AssertionError("unreachable: the last step returns")
