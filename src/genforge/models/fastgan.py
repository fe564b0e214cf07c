"""FastGAN (Liu et al. 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot
Image Synthesis"): a light generator whose low-resolution maps gate its high-resolution channels
(skip-layer excitation, SLE), and a discriminator trained also as a small auto-encoder on real
images (self-supervised reconstruction), so it learns features that describe the images rather
than shortcuts that merely separate them.

Checked against odegeasslbc/FastGAN-pytorch (models.py: InitLayer, UpBlock/UpBlockComp, SEBlock,
DownBlock/DownBlockComp, SimpleDecoder, Discriminator; train.py: the loss) and
lucidrains/lightweight-gan (its LPIPS-free reconstruction). Widths follow the reference's tables
of multipliers by side (``G_MULT``, ``d_width``), times ``ngf``/``ndf``. Every convolution is
spectrally normalised and initialised N(0, 0.02), as in the reference. The losses (hinge with
jittered margins, the reconstruction) live in ``genforge.losses``.

The reference is built for 256..1024 px with a fixed 128-px second scale. Here any power of two
from 32 to 1024 works, and what the reference fixes at 128 px is ``min(R / 2, 128)``
(``low_side``): the paper's sizes for 256..1024, scaled down with the data below that.

Deviation: the generator also excites its 16x16 and 32x32 maps from the 4x4 one. The reference
rule (side r from side r/16, for r in 64..512) gives a 32-px generator no SLE at all.
Deviation: the generator makes one image. The reference adds a 128-px image (a 1x1 conv at
128x128) that its discriminator's low-resolution branch judges; here that branch judges the
image downscaled, for fakes as for reals, so the generator is a plain ``G(z) -> image``.
Deviation: reconstruction targets and the low-resolution input are box-downscaled (area), not
nearest-neighbour as ``F.interpolate``'s default in the reference; the loss is MSE, not LPIPS
(``losses.fastgan_reconstruction``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from genforge.config import check, positive
from genforge.draws import randn
from genforge.errors import GenforgeError
from genforge.losses import downscale, quadrant

RESOLUTIONS = tuple(2**k for k in range(5, 11))  # 32 .. 1024
NOISE_MODES = ("random", "const", "none")
# Generator width per side, times ngf (the reference's nfc_multi).
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
DECODER_MULT = {16: 4, 32: 2, 64: 2, 128: 1}  # decoder width per output side, times ndf / 2


@dataclass
class FastGANConfig:
    # CPU-sized defaults: at 32x32 colour, G 2.5M and D 0.14M parameters. Measured once (torch 2.13,
    # 1 thread of a shared 2-core AMX CPU, 32x32 colour, batch 64, bf16 + channels_last as
    # train.precision=auto picks there; a step = D on reals with its decoders and on fakes, G
    # through D, both backwards): these widths 1.0-1.1 s; ngf = ndf = 16 1.4-1.6 s; ngf = ndf = 8
    # 0.7-0.8 s; the gan family's default DCGAN 0.3 s. The paper's networks are ngf = ndf = 64
    # with no cap (preset `paper`): G 4x4 maps 1024 wide, D 8x8 maps 512 wide.
    z_dim: int = 128  # the reference's nz is 256
    ngf: int = 16  # generator widths: G_MULT[side] * ngf
    ndf: int = 8  # discriminator widths: ndf * 64 / side (8 * ndf at 8x8)
    max_width: int = 256  # no layer wider than this
    resolution: int = 0  # square side, a power of two 32..1024 (0: taken from the data)
    channels: int = 0  # 1 grey, 3 colour (0: taken from the data)
    num_classes: int = 0  # always 0: FastGAN is unconditional (the GAN trainer reads the field)

    def __post_init__(self):
        positive(self, "z_dim", "max_width")
        check(self.ngf >= 8, "ngf", "must be at least 8 (the 1024-px layer is ngf / 8 wide)", self.ngf)
        check(self.ndf >= 8, "ndf", "must be at least 8 (the 512-px layer is ndf / 8 wide)", self.ndf)
        check(
            self.resolution == 0 or self.resolution in RESOLUTIONS,
            "resolution",
            f"must be a power of two from 32 to 1024 ({', '.join(map(str, RESOLUTIONS))}) or 0 (from the data)",
            self.resolution,
        )
        check(self.channels in (0, 1, 3), "channels", "must be 0 (from the data), 1 or 3", self.channels)
        check(self.num_classes == 0, "num_classes", "must be 0: FastGAN is unconditional", self.num_classes)


def g_width(cfg: FastGANConfig, side: int) -> int:
    return min(int(G_MULT[side] * cfg.ngf), cfg.max_width)


def d_width(cfg: FastGANConfig, side: int) -> int:
    """Discriminator width at ``side`` (the reference: nfc[2 * side])."""
    return min(cfg.ndf * 64 // side, cfg.max_width)


def low_side(resolution: int) -> int:
    """The side of the discriminator's second scale and of its reconstructions (128 in the reference)."""
    return min(resolution // 2, 128)


def g_sle_sources(resolution: int) -> dict[int, int]:
    """target side -> source side of the generator's excitations."""
    return {r: max(4, r // 16) for r in (2**k for k in range(4, 10)) if r <= resolution}


def d_sle_sources(resolution: int) -> dict[int, int]:
    """target side -> source side of the discriminator's excitations (the reference's 256->32, 128->16, 64->8)."""
    return {s // 8: s for s in (256, 128, 64) if s <= resolution}


def _require_built(cfg: FastGANConfig) -> None:
    if not (cfg.resolution and cfg.channels):
        raise GenforgeError("FastGAN needs resolution and channels: fill them from the data before building")


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, transposed: bool = False) -> nn.Module:
    """A bias-free convolution, N(0, 0.02) weights, spectrally normalised (after the init, so its
    power-iteration vectors start from the weight it keeps)."""
    layer = (nn.ConvTranspose2d if transposed else nn.Conv2d)(cin, cout, kernel, stride, padding, bias=False)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    return spectral_norm(layer)


def batch_norm(width: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(width)
    nn.init.normal_(bn.weight, 1.0, 0.02)
    nn.init.zeros_(bn.bias)
    return bn


class GLU(nn.Module):
    """(B, 2C, H, W) -> (B, C, H, W): the first half gated by the sigmoid of the second."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class NoiseInjection(nn.Module):
    """x + strength * one noise image per sample (shared by the channels); strength starts at 0."""

    def __init__(self, side: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(side, side))  # for repeatable renders (export)

    def forward(self, x: torch.Tensor, noise_mode: str, generator: torch.Generator | None) -> torch.Tensor:
        B, _, H, W = x.shape
        if noise_mode == "random":
            return x + randn((B, 1, H, W), generator, x.device).to(x.dtype) * self.strength
        if noise_mode == "const":
            return x + (self.noise_const * self.strength).to(x.dtype)
        return x


class UpBlock(nn.Module):
    """x2 nearest upsampling -> 3x3 conv to 2 * cout -> [noise] -> BN -> GLU; the "comp" block
    repeats conv -> noise -> BN -> GLU once more at the new side (the reference's UpBlockComp)."""

    def __init__(self, cin: int, cout: int, side: int, comp: bool):
        super().__init__()
        self.convs = nn.ModuleList([conv(cin, 2 * cout, 3, 1, 1)] + ([conv(cout, 2 * cout, 3, 1, 1)] if comp else []))
        self.noises = nn.ModuleList([NoiseInjection(side) for _ in self.convs] if comp else [])
        self.norms = nn.ModuleList([batch_norm(2 * cout) for _ in self.convs])
        self.glu = GLU()

    def forward(self, x: torch.Tensor, noise_mode: str, generator) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, cin, 2H, 2W)
        for i, (layer, norm) in enumerate(zip(self.convs, self.norms)):
            x = layer(x)
            if self.noises:
                x = self.noises[i](x, noise_mode, generator)
            x = self.glu(norm(x))  # (B, cout, 2H, 2W)
        return x


class SLE(nn.Module):
    """Skip-layer excitation: a per-channel gate for a high-resolution map from a low-resolution one.

    low (B, cin, h, h) -> adaptive average pool to 4x4 -> 4x4 conv (valid) to (B, cout, 1, 1) ->
    Swish -> 1x1 conv -> sigmoid, times high (B, cout, H, W). The paper's text says LeakyReLU(0.1);
    its code (SEBlock) uses Swish, as here.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv(cin, cout, 4)
        self.conv2 = conv(cout, cout, 1)

    def gate(self, low: torch.Tensor) -> torch.Tensor:
        s = self.conv1(F.adaptive_avg_pool2d(low, 4))  # (B, cout, 1, 1)
        return torch.sigmoid(self.conv2(F.silu(s)))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class DownBlock(nn.Module):
    """4x4 stride-2 conv -> BN -> LeakyReLU(0.2); the "comp" block adds a 3x3 conv -> BN -> LeakyReLU
    and averages with a shortcut (2x2 average pool -> 1x1 conv -> BN -> LeakyReLU)."""

    def __init__(self, cin: int, cout: int, comp: bool):
        super().__init__()
        main = [conv(cin, cout, 4, 2, 1), batch_norm(cout), nn.LeakyReLU(0.2)]
        if comp:
            main += [conv(cout, cout, 3, 1, 1), batch_norm(cout), nn.LeakyReLU(0.2)]
        self.main = nn.Sequential(*main)
        self.direct = (
            nn.Sequential(nn.AvgPool2d(2), conv(cin, cout, 1), batch_norm(cout), nn.LeakyReLU(0.2)) if comp else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.direct is None:
            return self.main(x)
        return (self.main(x) + self.direct(x)) / 2


class Decoder(nn.Module):
    """The discriminator's small decoder: (B, cin, h, w) -> adaptive average pool to 8x8 -> GLU
    up-blocks to ``side`` -> 3x3 conv -> tanh: (B, channels, side, side) (the reference's SimpleDecoder)."""

    def __init__(self, cin: int, channels: int, side: int, base: int):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        width, s = cin, 8
        while s < side:
            s *= 2
            out = DECODER_MULT.get(s, 1) * base
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), conv(width, 2 * out, 3, 1, 1)]
            layers += [batch_norm(2 * out), GLU()]
            width = out
        layers += [conv(width, channels, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ---------------------------------------------------------------------------------------------
# The networks
# ---------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """z (B, z_dim) -> 4x4 (transposed 4x4 conv, BN, GLU) -> up-blocks to the resolution, plain and
    "comp" in turn as the reference (comp at 8, 32, 128, 512), each map at a side in
    ``g_sle_sources`` gated by SLE -> 3x3 conv -> tanh: (B, C, R, R) in [-1, 1]."""

    def __init__(self, cfg: FastGANConfig):
        super().__init__()
        _require_built(cfg)
        self.cfg = cfg
        R = cfg.resolution
        self.init = conv(cfg.z_dim, 2 * g_width(cfg, 4), 4, transposed=True)
        self.init_norm = batch_norm(2 * g_width(cfg, 4))
        sides = [2**k for k in range(3, R.bit_length())]  # 8 .. R
        self.ups = nn.ModuleDict(
            {str(s): UpBlock(g_width(cfg, s // 2), g_width(cfg, s), s, comp=s.bit_length() % 2 == 0) for s in sides}
        )
        self.sle_sources = g_sle_sources(R)
        self.sles = nn.ModuleDict({str(t): SLE(g_width(cfg, s), g_width(cfg, t)) for t, s in self.sle_sources.items()})
        self.to_image = conv(g_width(cfg, R), cfg.channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, labels=None, noise_mode: str = "random", generator=None) -> torch.Tensor:
        """``labels`` is accepted for the GAN trainer's common signature; FastGAN takes none.
        ``noise_mode``: ``random`` draws the injected noise from ``generator``, ``const`` uses the
        stored noise images (repeatable, exportable), ``none`` leaves it out."""
        assert z.ndim == 2 and z.shape[1] == self.cfg.z_dim, f"expected (B, {self.cfg.z_dim}), got {tuple(z.shape)}"
        if noise_mode not in NOISE_MODES:
            raise GenforgeError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        x = F.glu(self.init_norm(self.init(z[:, :, None, None])), dim=1)  # (B, w4, 4, 4)
        maps = {4: x}
        for name, up in self.ups.items():
            side = int(name)
            x = up(x, noise_mode, generator)  # (B, w_side, side, side)
            if side in self.sle_sources:
                x = self.sles[name](maps[self.sle_sources[side]], x)
            maps[side] = x
        return torch.tanh(self.to_image(x))


class Discriminator(nn.Module):
    """Two scales, spatial logits, and three decoders used on real images.

    Big branch: the image -> a stem (a 3x3 conv at R <= 256; strided 4x4 convs down to 256 above)
    -> "comp" down-blocks to 8x8, the maps at ``d_sle_sources``' targets gated by SLE -> 1x1 conv,
    BN, LeakyReLU -> 4x4 conv: 5x5 logits. Small branch: the image downscaled to ``low_side`` ->
    4x4 stride-2 conv, LeakyReLU -> plain down-blocks to 8x8 -> 4x4 conv: 5x5 logits.
    ``forward`` returns (B, 50) logits; with ``part`` (0..3) also the reconstructions
    ``{"whole", "part", "small"}`` of its decoders, each (B, C, low_side, low_side).
    """

    def __init__(self, cfg: FastGANConfig):
        super().__init__()
        _require_built(cfg)
        self.cfg = cfg
        R, C, w = cfg.resolution, cfg.channels, lambda s: d_width(cfg, s)
        top = min(R, 256)
        if R <= 256:
            stem: list[nn.Module] = [conv(C, w(R), 3, 1, 1), nn.LeakyReLU(0.2)]
        else:
            stem = [conv(C, w(R // 2), 4, 2, 1), nn.LeakyReLU(0.2)]
            for s in (2**k for k in range((R // 4).bit_length() - 1, 7, -1)):  # R/4 .. 256
                stem += [conv(w(2 * s), w(s), 4, 2, 1), batch_norm(w(s)), nn.LeakyReLU(0.2)]
        self.stem = nn.Sequential(*stem)  # (B, w(top), top, top)
        sides = [2**k for k in range(top.bit_length() - 2, 2, -1)]  # top/2 .. 8
        self.downs = nn.ModuleDict({str(s): DownBlock(w(2 * s), w(s), comp=True) for s in sides})
        self.sle_sources = d_sle_sources(top)
        self.sles = nn.ModuleDict({str(t): SLE(w(s), w(t)) for t, s in self.sle_sources.items()})
        self.logits_big = nn.Sequential(
            conv(w(8), min(16 * cfg.ndf, cfg.max_width), 1),
            batch_norm(min(16 * cfg.ndf, cfg.max_width)),
            nn.LeakyReLU(0.2),
            conv(min(16 * cfg.ndf, cfg.max_width), 1, 4),
        )
        low = low_side(R)

        def s_width(side: int) -> int:  # the small branch's widths (the reference: nfc[4 * side])
            return min(cfg.ndf * 32 // side, cfg.max_width)

        small: list[nn.Module] = [conv(C, s_width(low // 2), 4, 2, 1), nn.LeakyReLU(0.2)]
        small += [
            DownBlock(s_width(2 * s), s_width(s), comp=False)
            for s in (2**k for k in range(low.bit_length() - 3, 2, -1))
        ]
        self.small = nn.Sequential(*small)  # (B, s_width(8), 8, 8)
        self.logits_small = conv(s_width(8), 1, 4)
        base = max(1, cfg.ndf // 2)
        self.decode_whole = Decoder(w(8), C, low, base)
        self.decode_part = Decoder(w(16), C, low, base)
        self.decode_small = Decoder(s_width(8), C, low, base)

    def forward(self, x: torch.Tensor, labels=None, part: int | None = None):
        R, C = self.cfg.resolution, self.cfg.channels
        assert x.shape[1:] == (C, R, R), f"expected (B, {C}, {R}, {R}), got {tuple(x.shape)}"
        h = self.stem(x)
        maps = {h.shape[-1]: h}
        for name, down in self.downs.items():
            side = int(name)
            h = down(h)
            if side in self.sle_sources:
                h = self.sles[name](maps[self.sle_sources[side]], h)
            maps[side] = h  # (B, w(side), side, side)
        feat_small = self.small(downscale(x, low_side(R)))  # (B, s_width(8), 8, 8)
        logits = torch.cat([self.logits_big(maps[8]).flatten(1), self.logits_small(feat_small).flatten(1)], 1)
        if part is None:
            return logits  # (B, 50)
        recons = {
            "whole": self.decode_whole(maps[8]),
            "part": self.decode_part(quadrant(maps[16], part)),
            "small": self.decode_small(feat_small),
        }
        return logits, recons


def with_fixed_weights(G: Generator) -> Generator:
    """An eval-mode copy of ``G`` with each spectrally normalised weight replaced by the weight it
    computes (W / sigma from the stored power-iteration vectors): the same outputs, and a graph
    ONNX can record (its exporter has no ``vdot``, which the normalisation uses).

    A new network, not a deep copy: removing a parametrization edits the module's class, which a
    deep copy shares with the original. Built without touching the caller's random state.
    """
    with torch.random.fork_rng(devices=[]):
        fixed = Generator(G.cfg)
    fixed.load_state_dict(G.state_dict())
    fixed.to(next(G.parameters()).device).eval()
    for module in fixed.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return fixed
