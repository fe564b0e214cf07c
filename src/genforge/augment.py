"""Discriminator augmentation: DiffAugment's ops, ADA's pipeline, and ADA's adaptive probability.

D sees augmented reals and augmented fakes alike, so it cannot memorise a small training set,
and because every op is differentiable in the image, G is trained through the same ops (Zhao et
al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"). ADA (Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data") sets how often they are applied
from how sure D is about the reals, and brings its own pipeline of ops (``ada_augment``).

Hand-written in torch rather than taken from kornia: every random draw goes through one
torch.Generator (or a ``draws.Share`` of it, under several processes), so a resumed run repeats
its augmentations bit for bit; every op is exactly differentiable in the image; and the number of
draws does not depend on p, so changing p never shifts the random stream.

DiffAugment's ops (``augment``) were checked against mit-han-lab/data-efficient-gans
DiffAugment_pytorch.py (ranges, the translation and cutout sizes and offsets); ADA's pipeline and
controller against stylegan2-ada-pytorch training/augment.py (AugmentPipe) and training_loop.py.
Images are (B, C, H, W) in [-1, 1] (as the reference's); zero fill is mid-grey. Deviation:
DiffAugment applies every op to every image; here each op is applied to each image with
probability p, as ADA does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from genforge.draws import Source, rand, randint, randn
from genforge.errors import GenforgeError

Probability = float | torch.Tensor  # a 0-dim tensor can change without recompiling a compiled step


MIRROR_NOTE = (
    "augment.mirror: on (the data has no labels: each real image is x-flipped with probability 0.5 "
    "when drawn; --set augment.mirror=false turns it off)"
)


def default_mirror(section, labelled: bool) -> tuple[list[str], tuple[str, ...]]:
    """Fill ``section.mirror`` (an augment config section) where it is null, the default: on for
    data without labels (a folder of one's own photos), off for labelled data (digits, clothes,
    emoji by category). The emoji-32 table measured it on: 0.80x the KID of plain DCGAN, recall
    0.10 -> 0.29. Returns the note training prints when it turned the mirror on, and the config
    keys it decided (``Prepared.decided``: a resumed run keeps the value it trained with)."""
    if section.mirror is not None:
        return [], ()
    section.mirror = not labelled
    return ([MIRROR_NOTE] if section.mirror else []), ("augment.mirror",)


def stored_mirror(augment: Any) -> dict[str, Any]:
    """A stored config's augment section (a dict, or missing) with ``mirror`` as the run trained:
    runs saved before the key existed trained without flips (``migrate`` of every image family)."""
    return {"mirror": False, **(augment if isinstance(augment, dict) else {})}


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


def random_color(x: torch.Tensor, p: Probability = 1.0, generator: Source = None) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), then saturation x U(0, 2), then contrast x U(0.5, 1.5)."""
    draws = rand((4, x.shape[0]), generator, x.device, batch_dim=1)  # brightness, saturation, contrast, apply?
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
    generator: Source = None,
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
# ADA's pipeline: geometric ops as one affine warp, colour ops as one 4x4 colour matrix
# ---------------------------------------------------------------------------------------------

# The reference's 'bgc' pipeline: pixel blitting, general geometric, colour; each applied to each
# image with probability p (times the op's multiplier, 1 for all of these).
ADA_OPS = (
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation",
)  # fmt: skip
# The reference's strengths (AugmentPipe's defaults): shifts relative to the image side, rotation
# and hue ranges as fractions of a full circle (either way), log2 standard deviations for scale,
# aniso, contrast and saturation, brightness in our [-1, 1] units (the reference's are the same).
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0
# Columns of the two draws each call makes, (B, 21) uniform and (B, 7) normal: the same draws
# whatever p is (and whatever the channels: a grey image draws hue and saturation too).
_UNIFORM = ("xflip", "xflip?", "rot90", "rot90?", "xint_x", "xint_y", "xint?", "scale?", "pre", "pre?", "aniso?",
            "post", "post?", "xfrac?", "brightness?", "contrast?", "luma", "luma?", "hue", "hue?", "saturation?")  # fmt: skip
_NORMAL = ("scale", "aniso", "xfrac_x", "xfrac_y", "brightness", "contrast", "saturation")


def _stack(rows: list[list], like: torch.Tensor) -> torch.Tensor:
    """A (B, R, K) batch of matrices from rows of (B,) tensors and numbers."""
    full = [[e if isinstance(e, torch.Tensor) else torch.full_like(like, float(e)) for e in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in full], dim=-2)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(B,) shifts in pixels (x right, y down) -> (B, 3, 3) homogeneous matrices."""
    return _stack([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _stack([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta radians, from +x towards +y (on screen, where y points down: clockwise)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return _stack([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def warp(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample image b at inverse[b] (B, 3, 3) @ each output pixel, in pixels from the image's centre
    (x right, y down): bilinear, reflected at the border (mirrored about the outer pixel edges).

    Deviation: the reference pads by reflection, upsamples x2 with a sym6 wavelet filter, samples,
    and downsamples; here one bilinear grid_sample at the image's own resolution, with
    grid_sample's reflection padding. Cheaper, a little more aliasing for rotations and scalings,
    and the whole-pixel ops (flips, quarter turns, integer shifts) exact up to the float rounding of
    the sampling positions.
    """
    B, C, H, W = x.shape
    # To grid_sample's coordinates (-1..1 across the image, align_corners=False): pixel j's centre is
    # at 2 (j - (W - 1) / 2) / W, so centred pixel units scale by 2 / W and 2 / H.
    to_grid = torch.tensor([2 / W, 2 / H, 1.0], dtype=inverse.dtype, device=inverse.device)
    theta = to_grid[:, None] * inverse / to_grid[None, :]  # diag(to_grid) @ inverse @ diag(1 / to_grid)
    grid = F.affine_grid(theta[:, :2, :], [B, C, H, W], align_corners=False).to(x.dtype)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)  # the grey axis of RGB, homogeneous


def _color_matrices(values: dict[str, torch.Tensor], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 4, 4) homogeneous colour matrices of brightness b, contrast c, luma flip i (0/1), hue
    rotation theta, saturation s."""
    v = LUMA.to(like.device, like.dtype)
    vv = torch.outer(v, v)  # projection onto the grey axis
    eye = torch.eye(4, device=like.device, dtype=like.dtype)
    b, c, i, theta, s = (values[k] for k in ("brightness", "contrast", "lumaflip", "hue", "saturation"))
    # Rotation about the unit grey axis v by theta (Rodrigues): cos * I + sin * [v]x + (1 - cos) vv^T.
    cross = torch.zeros(4, 4, device=like.device, dtype=like.dtype)
    cross[0, 1], cross[0, 2], cross[1, 2] = -v[2], v[1], -v[0]
    cross = cross - cross.T
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    hue = cos * (eye - vv) + sin * cross[None] + vv  # on the homogeneous 4th coordinate: 1
    hue[:, 3, 3] = 1.0
    return {
        "brightness": _stack([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], b),
        "contrast": _stack([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], c),
        "lumaflip": eye - 2 * vv * i[:, None, None],  # Householder reflection through the plane normal to grey
        "hue": hue,
        "saturation": vv + (eye - vv) * s[:, None, None],
    }


def recolor(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply (B, 4, 4) colour matrices to (B, 3, H, W) RGB or (B, 1, H, W) grey images.

    Grey, as the reference: the mean of the matrix's three colour rows acts on (g, g, g, 1), so
    brightness adds, contrast scales and a luma flip negates (about mid-grey, 0).
    """
    B, C, H, W = x.shape
    flat = x.reshape(B, C, H * W)
    m = matrix.to(x.dtype)
    if C == 3:
        out = m[:, :3, :3] @ flat + m[:, :3, 3:]
    elif C == 1:
        rows = m[:, :3, :].mean(dim=1)  # (B, 4)
        out = flat * rows[:, :3].sum(dim=1)[:, None, None] + rows[:, 3, None, None]
    else:
        raise GenforgeError(f"ADA's colour ops need 1 (grey) or 3 (RGB) channels, got {C}")
    return out.reshape(B, C, H, W)


def ada_parameters(uniform: torch.Tensor, normal: torch.Tensor, p: Probability, size: tuple[int, int]) -> dict:
    """Each op's parameter per image from the draws (B, 21) U[0, 1) and (B, 7) N(0, 1), ``size``
    (H, W): each op's coin comes up with probability p (always once p >= 1), and an op whose coin
    does not gets its neutral value (0 shift or angle, scale 1, ...)."""
    u = dict(zip(_UNIFORM, uniform.unbind(1)))
    n = dict(zip(_NORMAL, normal.unbind(1)))
    H, W = size
    p = torch.as_tensor(p, dtype=uniform.dtype)
    zero, one = torch.zeros_like(u["xflip"]), torch.ones_like(u["xflip"])
    # The reference's two rotations each at 1 - sqrt(1 - p): together they happen with probability p.
    p_rot = 1 - (1 - p).clamp(0, 1).sqrt()
    on = lambda name, value, neutral, prob=p: torch.where(u[name + "?"] < prob, value, neutral)
    return {
        "xflip": on("xflip", torch.floor(u["xflip"] * 2), zero),  # 0 or 1
        "rotate90": on("rot90", torch.floor(u["rot90"] * 4), zero),  # quarter turns
        "xint": (  # whole pixels, up to XINT_MAX of the side, each way
            on("xint", torch.round((u["xint_x"] * 2 - 1) * XINT_MAX * W), zero),
            on("xint", torch.round((u["xint_y"] * 2 - 1) * XINT_MAX * H), zero),
        ),
        "scale": on("scale", torch.exp2(n["scale"] * SCALE_STD), one),
        "pre_rotate": on("pre", (u["pre"] * 2 - 1) * math.pi * ROTATE_MAX, zero, p_rot),
        "aniso": on("aniso", torch.exp2(n["aniso"] * ANISO_STD), one),
        "post_rotate": on("post", (u["post"] * 2 - 1) * math.pi * ROTATE_MAX, zero, p_rot),
        "xfrac": (on("xfrac", n["xfrac_x"] * XFRAC_STD * W, zero), on("xfrac", n["xfrac_y"] * XFRAC_STD * H, zero)),
        "brightness": on("brightness", n["brightness"] * BRIGHTNESS_STD, zero),
        "contrast": on("contrast", torch.exp2(n["contrast"] * CONTRAST_STD), one),
        "lumaflip": on("luma", torch.floor(u["luma"] * 2), zero),
        "hue": on("hue", (u["hue"] * 2 - 1) * math.pi * HUE_MAX, zero),
        "saturation": on("saturation", torch.exp2(n["saturation"] * SATURATION_STD), one),
    }


def geometric_inverse(values: dict) -> torch.Tensor:
    """(B, 3, 3): output pixel -> input pixel, the ops' inverses composed in the reference's order
    (x-flip, quarter turns, integer shift, scale, rotation, anisotropic scale, rotation, fraction shift)."""
    like = values["scale"]
    inverse = torch.eye(3, dtype=like.dtype, device=like.device).expand(like.shape[0], 3, 3)
    flip = 1 - 2 * values["xflip"]
    for step in (
        scale2d(flip, torch.ones_like(flip)),  # its own inverse
        rotate2d(math.pi / 2 * values["rotate90"]),  # inverse of turning by -90 degrees x i
        translate2d(-values["xint"][0], -values["xint"][1]),
        scale2d(1 / values["scale"], 1 / values["scale"]),
        rotate2d(values["pre_rotate"]),  # inverse of a rotation by -theta, as the reference
        scale2d(1 / values["aniso"], values["aniso"]),
        rotate2d(values["post_rotate"]),
        translate2d(-values["xfrac"][0], -values["xfrac"][1]),
    ):
        inverse = inverse @ step
    return inverse


def color_matrix(values: dict, channels: int) -> torch.Tensor:
    """(B, 4, 4): brightness, then contrast, luma flip, hue, saturation (the reference's order).
    Hue and saturation only act on colour: a grey image skips them (as the reference)."""
    mats = _color_matrices(values, values["brightness"])
    order = ("brightness", "contrast", "lumaflip") + (("hue", "saturation") if channels == 3 else ())
    out = torch.eye(4, dtype=values["brightness"].dtype, device=values["brightness"].device)
    for name in order:
        out = mats[name] @ out
    return out


def ada_augment(x: torch.Tensor, p: Probability = 1.0, generator: Source = None) -> torch.Tensor:
    """ADA's 'bgc' pipeline: (B, C, H, W) -> (B, C, H, W), C = 1 or 3, each of ``ADA_OPS`` applied
    to each image with probability p; geometric ops as one warp, colour ops as one matrix.

    Differentiable in x. An image no op touched comes back bit-exact (so p = 0 is the identity);
    the draws are the same whatever p. p above 1 acts as 1 (the controller lets it pass 1, as
    the reference's does).
    """
    B, C, H, W = x.shape
    uniform = rand((B, len(_UNIFORM)), generator, x.device)
    normal = randn((B, len(_NORMAL)), generator, x.device)
    values = ada_parameters(uniform, normal, p, (H, W))
    inverse = geometric_inverse(values)  # (B, 3, 3)
    eye3 = torch.eye(3, dtype=inverse.dtype, device=x.device)
    moved = (inverse != eye3).flatten(1).any(dim=1)  # (B,): exactly identity unless an op was applied
    x = torch.where(moved[:, None, None, None], warp(x, inverse), x)
    colours = color_matrix(values, C)
    eye4 = torch.eye(4, dtype=colours.dtype, device=x.device)
    changed = (colours != eye4).flatten(1).any(dim=1)
    return torch.where(changed[:, None, None, None], recolor(x, colours), x)


# name -> (x, ops, p, generator) -> x: what augment.pipeline chooses
PIPELINES = {
    "diffaugment": lambda x, ops, p, generator: augment(x, ops, p, generator),
    "ada": lambda x, ops, p, generator: ada_augment(x, p, generator),
}


# ---------------------------------------------------------------------------------------------
# ADA: adapt p to D's overfitting
# ---------------------------------------------------------------------------------------------


class AdaptiveAugment:
    """ADA's controller: r_t = E[sign(D(real))] measures how sure D is about the reals (1 when it
    has memorised them); every ``interval`` steps p moves towards holding r_t at ``target``, by
    batch_size * interval / speed, so p can cross [0, 1] in ``speed`` images (ada_kimg * 1000).
    p stops at 0 but not at 1, as the reference's (above 1 every op is always applied; the excess
    is how long p would take to come back down).

    Usage per step: ``x = augment(x, p=ada.p)``; ``ada.observe(real_logits)``; ``ada.update(batch)``.
    Under several processes ``update`` sums each step's signs over the ranks (one all-reduce of two
    numbers per step), so every rank holds the global sums between steps: the p of every rank is
    the same, and any rank's state, checkpointed, resumes them all exactly.
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
        # [sum of sign(D(real)), number of logits]: this rank's in this step, and every rank's since
        # the last update. Kept on the device so that observing costs no host sync; read once per interval.
        self.pending = torch.zeros(2, device=device)
        self.signs = torch.zeros(2, device=device)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) for the next update (on the device, no sync)."""
        with torch.no_grad():
            self.pending[0] += real_logits.detach().float().sign().sum()
            self.pending[1] += real_logits.numel()

    def update(self, batch_size: int) -> float | None:
        """Call once per step with the global batch size (images per step over all processes, as in
        the reference). Every ``interval``-th call moves p and returns r_t; otherwise returns None."""
        self.step += 1
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.pending)  # every rank's signs of this step
        self.signs += self.pending
        self.pending.zero_()
        if self.step % self.interval:
            return None
        sign_sum, count = self.signs.tolist()  # the one host sync per interval
        self.signs.zero_()
        if count == 0:
            return None
        rt = sign_sum / count
        direction = (rt > self.target) - (rt < self.target)
        self.p = max(self.p + direction * batch_size * self.interval / self.speed, 0.0)
        self.last_rt = rt
        return rt

    def state(self) -> dict:
        """JSON-able part of the state, for the checkpoint's metadata."""
        return {"p": self.p, "step": self.step, "last_rt": self.last_rt}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The on-device sums since the last update (every rank's), for the checkpoint's safetensors."""
        return {"signs": self.signs.detach().clone()}

    def load(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Restore from ``tensors()`` and ``state()`` for an exact resume; a missing or extra key is an error."""
        if set(tensors) != {"signs"} or set(state) != {"p", "step", "last_rt"}:
            raise GenforgeError(
                f"ADA checkpoint has tensors {sorted(tensors)} and state {sorted(state)}; "
                "expected tensors ['signs'] and state ['last_rt', 'p', 'step']"
            )
        self.signs.copy_(tensors["signs"])
        self.pending.zero_()
        self.p, self.step = float(state["p"]), int(state["step"])
        self.last_rt = None if state["last_rt"] is None else float(state["last_rt"])
