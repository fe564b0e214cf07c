"""Discriminator augmentation: DiffAugment's differentiable ops and ADA's adaptive probability.

D sees augmented reals and augmented fakes alike, so it cannot memorise a small training set,
and because every op is differentiable in the image, G is trained through the same ops (Zhao et
al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"). ADA (Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data") sets how often they are applied
from how sure D is about the reals.

Hand-written in torch rather than taken from kornia: three short ops do not justify the
dependency; every random draw goes through one torch.Generator, so a resumed run repeats its
augmentations bit for bit; all three ops are exactly differentiable in the image; and the
number of draws does not depend on p, so changing p never shifts the random stream.

Checked against mit-han-lab/data-efficient-gans DiffAugment_pytorch.py (ranges, the translation
and cutout sizes and offsets) and stylegan2-ada-pytorch training_loop.py (the ADA update).
Images are (B, C, H, W) in [-1, 1]; zero fill is mid-grey. Deviation: DiffAugment applies every
op to every image; here each op is applied to each image with probability p, as ADA does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from genforge.draws import rand, randint
from genforge.errors import GenforgeError

Probability = float | torch.Tensor  # a 0-dim tensor can change without recompiling a compiled step


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in x's dtype, to broadcast over an image batch."""
    return values.to(x.dtype).reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# The ops in closed form, given their parameters
# ---------------------------------------------------------------------------------------------


def brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add shift[b] (B,) to every pixel of image b."""
    return x + _per_sample(shift, x)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's departure from its own channel mean by factor[b]: grey stays grey."""
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return mean + (x - mean) * _per_sample(factor, x)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's departure from its own mean by factor[b]: the mean is kept."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return mean + (x - mean) * _per_sample(factor, x)


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move image b's content by whole pixels, dy[b] down and dx[b] right; uncovered pixels are 0.

    A gather from a copy with a one-pixel zero border, every source index past the image clamped
    onto that border (as DiffAugment): any shift works, no host sync, differentiable in x.
    """
    B, C, H, W = x.shape
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H + 2, W + 2)
    rows = (torch.arange(H, device=x.device)[None, :] - dy[:, None] + 1).clamp(0, H + 1)  # (B, H) source rows
    cols = (torch.arange(W, device=x.device)[None, :] - dx[:, None] + 1).clamp(0, W + 1)  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2))  # (B, C, H, W + 2)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def cut_out(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square of image b from (top[b], left[b]); the parts outside the image are
    dropped. A size of 0 leaves the image alone."""
    B, _, H, W = x.shape
    rows = torch.arange(H, device=x.device)[None, :]  # (1, H)
    cols = torch.arange(W, device=x.device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (B, W)
    keep = ~(inside_rows[:, :, None] & inside_cols[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Random ops: (x, p, generator) -> x, each image augmented with probability p
# ---------------------------------------------------------------------------------------------


def random_color(x: torch.Tensor, p: Probability = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), then saturation x U(0, 2), then contrast x U(0.5, 1.5)."""
    draws = rand((4, x.shape[0]), generator, x.device)  # brightness, saturation, contrast, apply?
    y = contrast(saturation(brightness(x, draws[0] - 0.5), 2 * draws[1]), draws[2] + 0.5)
    # torch.where rather than neutral parameters: an image left alone is bit-exact, not (x - m) * 1 + m.
    return torch.where((draws[3] < p).reshape(-1, 1, 1, 1), y, x)


def random_translation(x: torch.Tensor, p: Probability = 1.0, generator=None, ratio: float = 1 / 8) -> torch.Tensor:
    """Shift by whole pixels, up to ratio of the side (rounded) in each direction, zero fill."""
    B, _, H, W = x.shape
    max_dy, max_dx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = randint(-max_dy, max_dy + 1, (B,), generator, x.device)
    dx = randint(-max_dx, max_dx + 1, (B,), generator, x.device)
    apply = rand((B,), generator, x.device) < p
    return translate(x, torch.where(apply, dy, 0), torch.where(apply, dx, 0))


def random_cutout(x: torch.Tensor, p: Probability = 1.0, generator=None, ratio: float = 1 / 2) -> torch.Tensor:
    """Zero a square of ratio of the side, centred anywhere in the image, so the border sometimes
    clips it (as in DiffAugment): for ratio 1/2 at most 1/4 of the area, about 0.19 on average."""
    B, _, H, W = x.shape
    size = int(H * ratio + 0.5)
    # DiffAugment's centre range: 0 .. H inclusive for an even size, so the square can overhang either edge equally.
    centre_y = randint(0, H + 1 - size % 2, (B,), generator, x.device)
    centre_x = randint(0, W + 1 - size % 2, (B,), generator, x.device)
    apply = rand((B,), generator, x.device) < p
    left = torch.where(apply, centre_x - size // 2, W)  # W: past the right edge, so nothing is cut
    return cut_out(x, centre_y - size // 2, left, size)


# name -> op; applied in the order given, each with its own per-image coin
AUGMENTS = {"color": random_color, "translation": random_translation, "cutout": random_cutout}


def augment(
    x: torch.Tensor,
    ops: tuple[str, ...] = ("color", "translation", "cutout"),
    p: Probability = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each op in ``ops`` applied to each image with probability p.

    Differentiable in x: apply it to reals and fakes alike, and G learns through it. p = 0 returns
    x unchanged (bit-exact). Pass a seeded ``generator`` for reproducible draws.
    """
    for name in ops:
        if name not in AUGMENTS:
            raise GenforgeError(f"unknown augmentation {name!r}: choose from {', '.join(AUGMENTS)}")
        x = AUGMENTS[name](x, p, generator)
    return x


# ---------------------------------------------------------------------------------------------
# ADA: adapt p to D's overfitting
# ---------------------------------------------------------------------------------------------


class AdaptiveAugment:
    """ADA's controller: r_t = E[sign(D(real))] measures how sure D is about the reals (1 when it
    has memorised them); every ``interval`` steps p moves towards holding r_t at ``target``, by
    batch_size * interval / speed, so p can cross [0, 1] in ``speed`` images (ada_kimg * 1000).

    Usage per step: ``x = augment(x, p=ada.p)``; ``ada.observe(real_logits)``; ``ada.update(batch)``.
    """

    def __init__(self, target=0.6, interval=4, speed=500_000, p=0.0, device: torch.device | str = "cpu"):
        if not 0 < target < 1:
            raise GenforgeError(f"ADA target must be in (0, 1), got {target}")
        if interval < 1 or speed <= 0:
            raise GenforgeError(f"ADA interval and speed must be positive, got {interval} and {speed}")
        if not 0 <= p <= 1:
            raise GenforgeError(f"ADA p must be in [0, 1], got {p}")
        self.target, self.interval, self.speed = target, interval, speed
        self.p = float(p)
        self.step = 0
        self.last_rt: float | None = None
        # [sum of sign(D(real)), number of logits] since the last update, kept on the device so
        # that observing costs no host sync; read once per interval.
        self.signs = torch.zeros(2, device=device)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) for the next update (on the device, no sync)."""
        with torch.no_grad():
            self.signs[0] += real_logits.detach().float().sign().sum()
            self.signs[1] += real_logits.numel()

    def update(self, batch_size: int) -> float | None:
        """Call once per step with the global batch size (images per step over all processes, as in
        the reference). Every ``interval``-th call moves p and returns r_t; otherwise returns None."""
        self.step += 1
        if self.step % self.interval:
            return None
        totals = self.signs.clone()
        self.signs.zero_()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)  # every process sees the same r_t and so keeps the same p
        sign_sum, count = totals.tolist()  # the one host sync per interval
        if count == 0:
            return None
        rt = sign_sum / count
        direction = (rt > self.target) - (rt < self.target)
        self.p = min(max(self.p + direction * batch_size * self.interval / self.speed, 0.0), 1.0)
        self.last_rt = rt
        return rt

    def state(self) -> dict:
        """JSON-able part of the state, for the checkpoint's metadata."""
        return {"p": self.p, "step": self.step, "last_rt": self.last_rt}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The on-device accumulators, for the checkpoint's safetensors."""
        return {"signs": self.signs.detach().clone()}

    def load(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Restore from ``tensors()`` and ``state()`` for an exact resume; a missing or extra key is an error."""
        if set(tensors) != {"signs"} or set(state) != {"p", "step", "last_rt"}:
            raise GenforgeError(
                f"ADA checkpoint has tensors {sorted(tensors)} and state {sorted(state)}; "
                "expected tensors ['signs'] and state ['last_rt', 'p', 'step']"
            )
        self.signs.copy_(tensors["signs"])
        self.p, self.step = float(state["p"]), int(state["step"])
        self.last_rt = None if state["last_rt"] is None else float(state["last_rt"])
