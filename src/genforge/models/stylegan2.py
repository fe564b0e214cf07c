"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

A mapping network turns z (and a class) into w; a skip-architecture synthesis network grows an
image from a learned 4x4 constant through modulated, demodulated 3x3 convolutions with per-pixel
noise; a residual discriminator with minibatch standard deviation judges it.

Each definition was checked against NVlabs/stylegan2-ada-pytorch (training/networks.py and
torch_utils/ops). This file is plain PyTorch (no custom CUDA kernels), so the same code runs on
CPU, CUDA and MPS, in fp32 and under bf16 autocast. Deliberate differences from the reference
are marked "Deviation:". Not here: conv clamping and the reference's fp16 tricks (we train in
fp32 or bf16, which does not overflow), the 'orig'/'resnet' generator and 'skip' discriminator
variants, truncation cutoff, and the losses: R1 and path length regularisation are pure functions
in genforge.losses, which ``families/gan_trainer.py`` applies (``Generator.images_and_ws`` gives
it the ws that path length regularisation differentiates against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from genforge.config import check, fraction, non_negative, positive
from genforge.draws import rand, randint, randn
from genforge.errors import GenforgeError

RESOLUTIONS = tuple(2**k for k in range(3, 11))  # 8 .. 1024
NOISE_MODES = ("random", "const", "none")
SQRT_HALF = math.sqrt(0.5)  # keeps a residual sum y + x at the variance of its terms


@dataclass
class StyleGAN2Config:
    # Defaults are sized for a CPU. Measured once (torch 2.13 CPU, 1 thread on a shared 2-core
    # machine, 32x32 grey, batch 64; a step = G forward, D on fake and on real, backward through
    # both): DCGAN with 128-wide G and D (3.4M + 2.6M parameters) 1.8 s; these defaults (widths
    # 32/64/128/256 from 32x32 down to 4x4, two 128-wide mapping layers; 1.4M + 2.3M parameters)
    # 1.9 s; width 24, max_width 192: 1.4 s. The reference's CIFAR preset is 512 wide throughout.
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2  # the reference's CIFAR preset uses 2; the paper's FFHQ model 8
    width: int = 32  # layer width at the full resolution, doubling per halving of resolution
    max_width: int = 256
    # > 0: the width at resolution r is channel_base / r (capped at max_width), the reference's
    # channel_base (its fmaps 0.5 is 16384, fmaps 1 is 32768), in place of `width`. 0: `width` rules.
    channel_base: int = 0
    resolution: int = 0  # square image side, a power of two 8..1024 (0: taken from the data)
    channels: int = 0  # image channels: 1 grey, 3 colour (0: taken from the data)
    num_classes: int = 0  # 0: unconditional
    mbstd_group: int = 4  # samples per minibatch-standard-deviation group (fewer if the batch is smaller)
    mbstd_channels: int = 1  # feature maps the minibatch standard deviation appends (0: off)
    mapping_lr: float = 0.01  # learning-rate multiplier of the mapping networks
    style_mixing: float = 0.9  # probability that a training sample mixes the styles of two z
    w_avg_beta: float = 0.995  # decay of the running mean of w that truncation pulls towards

    def __post_init__(self):
        positive(self, "z_dim", "w_dim", "mapping_layers", "width", "max_width", "mbstd_group", "mapping_lr")
        non_negative(self, "num_classes", "mbstd_channels", "channel_base")
        check(
            self.resolution == 0 or self.resolution in RESOLUTIONS,
            "resolution",
            f"must be a power of two from 8 to 1024 ({', '.join(map(str, RESOLUTIONS))}) or 0 (from the data)",
            self.resolution,
        )
        check(self.channels in (0, 1, 3), "channels", "must be 0 (from the data), 1 or 3", self.channels)
        check(0 <= self.style_mixing <= 1, "style_mixing", "must be a probability in [0, 1]", self.style_mixing)
        fraction(self, "w_avg_beta")
        if self.resolution and self.mbstd_channels:
            width4 = widths(self)[4]
            check(
                width4 % self.mbstd_channels == 0,
                "mbstd_channels",
                f"must divide the 4x4 layer width {width4}",
                self.mbstd_channels,
            )


def widths(cfg: StyleGAN2Config) -> dict[int, int]:
    """Layer width at each resolution 4 .. cfg.resolution, shared by G and D (the reference's channel_base)."""
    base = cfg.channel_base or cfg.width * cfg.resolution
    return {2**k: min(base // 2**k, cfg.max_width) for k in range(2, cfg.resolution.bit_length())}


def _require_built(cfg: StyleGAN2Config) -> None:
    if not (cfg.resolution and cfg.channels):
        raise GenforgeError("StyleGAN2 needs resolution and channels: fill them from the data before building")


# ---------------------------------------------------------------------------------------------
# Equalized learning rate, bias + activation, FIR resampling
# ---------------------------------------------------------------------------------------------

# name -> (function, gain). The gain sqrt(2) restores the variance lrelu takes away (He et al.).
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
}


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float = 1.0) -> torch.Tensor:
    """x + bias (along dim 1), activation, times the activation's gain and an extra ``gain``."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    func, act_gain = ACTIVATIONS[activation]
    x = func(x)
    return x * (act_gain * gain) if act_gain * gain != 1 else x


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate (Karras et al. 2018).

    The weight is stored N(0, 1) / lr_mul and scaled at run time by lr_mul / sqrt(fan_in): every
    weight then sees the same effective step size under Adam whatever its fan-in, and lr_mul < 1
    slows a whole layer down (the mapping network) without a separate optimizer group.
    """

    def __init__(self, in_features, out_features, bias=True, bias_init=0.0, lr_mul=1.0, activation="linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return bias_act(F.linear(x, self.weight * self.weight_gain), bias, self.activation)


FIR = (1 / 8, 3 / 8, 3 / 8, 1 / 8)  # the [1, 3, 3, 1] binomial low-pass filter, normalized, applied once per axis


def upfirdn2d(x: torch.Tensor, up=1, down=1, pad=(0, 0), gain=1.0) -> torch.Tensor:
    """Upsample by zero insertion, zero-pad (before, after) on both axes, filter with FIR, keep every down-th pixel.

    The reference's _upfirdn2d_ref restricted to what StyleGAN2 uses: equal factors and padding on
    both axes and one symmetric separable filter (so correlation = convolution), gain split over
    the axes. Deviation: the filter is a sum of shifted copies rather than a depthwise convolution;
    a one-channel convolution is slow to backpropagate on CPU (measured: 60% of a training step).
    """
    B, C, H, W = x.shape
    if up > 1:
        x = F.pad(x.reshape(B, C, H, 1, W, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(B, C, H * up, W * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    taps = [t * math.sqrt(gain) for t in FIR]
    h = (x.shape[2] - len(taps)) // down + 1  # output size
    w = (x.shape[3] - len(taps)) // down + 1
    x = sum(t * x[:, :, :, k : k + down * (w - 1) + 1 : down] for k, t in enumerate(taps))
    return sum(t * x[:, :, k : k + down * (h - 1) + 1 : down] for k, t in enumerate(taps))


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W); gain 4 because zero insertion leaves 1 pixel in 4 non-zero."""
    return upfirdn2d(x, up=2, pad=(2, 1), gain=4)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2), low-pass filtered first so nothing aliases."""
    return upfirdn2d(x, down=2, pad=(1, 1))


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate, optionally downsampling x2 (filter, then stride 2)."""

    def __init__(
        self, in_width, out_width, kernel_size, bias=True, activation="linear", down=False, gain=1.0, lr_mul=1.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_width, in_width, kernel_size, kernel_size) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_width)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_width * kernel_size**2)
        self.lr_mul, self.activation, self.down, self.gain = lr_mul, activation, down, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        k = weight.shape[-1]
        if not self.down:
            x = F.conv2d(x, weight.to(x.dtype), padding=k // 2)
        elif k == 1:  # the skip path: resample first, then the cheap 1x1 convolution
            x = F.conv2d(downsample2d(x), weight.to(x.dtype))
        else:  # padding as the reference's conv2d_resample: (H + 4 - 3 - 3) // 2 + 1 = H / 2
            x = F.conv2d(upfirdn2d(x, pad=(k // 2 + 1, k // 2 + 1)), weight.to(x.dtype), stride=2)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return bias_act(x, bias, self.activation, self.gain)


# ---------------------------------------------------------------------------------------------
# Generator: mapping network, modulated convolutions, skip synthesis network
# ---------------------------------------------------------------------------------------------


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square: z and the class embedding enter on an equal footing."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (B, z_dim) and/or class (B,) -> w (B, w_dim), or (B, num_ws, w_dim) broadcast for synthesis.

    Also D's class mapping (z_dim 0, no w_avg). The class is an embedding table: the reference's
    fully connected layer on a one-hot label is the same lookup (plus a bias).
    """

    def __init__(self, z_dim, num_classes, w_dim, num_layers, lr_mul, w_avg_beta: float | None, num_ws=0):
        super().__init__()
        self.z_dim, self.num_classes, self.num_ws, self.w_avg_beta = z_dim, num_classes, num_ws, w_avg_beta
        self.embed = nn.Embedding(num_classes, w_dim) if num_classes else None
        sizes = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu") for a, b in zip(sizes[:-1], sizes[1:])]
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, labels=None, truncation_psi=1.0, update_w_avg=True) -> torch.Tensor:
        parts = []
        if self.z_dim:
            assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected z (B, {self.z_dim}), got {tuple(z.shape)}"
            parts.append(normalize_2nd_moment(z.float()))
        if self.num_classes:
            if labels is None:
                raise GenforgeError(f"this StyleGAN2 is conditional on {self.num_classes} classes: pass labels")
            parts.append(normalize_2nd_moment(self.embed(labels)))
        w = self.layers(torch.cat(parts, dim=1))  # (B, w_dim)
        if self.w_avg_beta is not None and self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            w = self.w_avg.lerp(w.float(), truncation_psi)  # w_avg + psi * (w - w_avg)
        return w[:, None, :].expand(-1, self.num_ws, -1) if self.num_ws else w


def modulated_conv2d(x, weight, styles, demodulate=True, up=False) -> torch.Tensor:
    """x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> (B, O, H, W), or (B, O, 2H, 2W) with ``up``.

    Modulation scales the weight's input channels per sample; demodulation rescales each output
    channel so that unit-variance i.i.d. inputs give unit-variance outputs whatever the style's
    size, which is what removed StyleGAN's droplet artifacts.

    Deviation: the reference folds the per-sample weights into one grouped convolution at
    inference; we always take its non-fused path (scale the input, convolve with the shared
    weight, scale the output). It is the same linear map, uses ordinary convolution kernels
    (fast on CPU and GPU, in training and under autocast), and gives one path to test.
    """
    B, I = styles.shape
    O, _, k, _ = weight.shape
    assert x.shape[:2] == (B, I), f"expected x (B={B}, I={I}, H, W), got {tuple(x.shape)}"
    x = x * styles.to(x.dtype).reshape(B, I, 1, 1)
    w = weight.to(x.dtype)
    if up:  # as the reference's fast path: transposed stride-2 convolution, then the FIR filter
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)  # (B, O, 2H + k - 2, 2W + k - 2)
        x = upfirdn2d(x, pad=(k // 2 + 2 - (k - 1), k // 2 + 1 - (k - 2)), gain=4)  # (B, O, 2H, 2W)
    else:
        x = F.conv2d(x, w, padding=k // 2)
    if demodulate:
        x = x * demodulation(weight, styles).to(x.dtype).reshape(B, O, 1, 1)
    return x


def demodulation(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ||weight * style||_2 per (sample, output channel): weight (O, I, k, k), styles (B, I) -> (B, O), fp32.

    Without building the (B, O, I, k, k) per-sample weights: sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2
    sum_k w_oik^2. In fp32 under autocast too (the reference computes its demodulation coefficients
    in fp32): a bf16 sum over I * k * k squares keeps about 3 significant digits.
    """
    with torch.autocast(weight.device.type, enabled=False):
        return (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()


class ModulatedConv2d(nn.Module):
    """One synthesis layer: style affine -> modulated 3x3 conv (optionally x2 up) -> noise -> bias, lrelu."""

    def __init__(self, in_width, out_width, w_dim, resolution, up=False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_width, bias_init=1.0)  # styles start at 1: modulation starts neutral
        self.weight = nn.Parameter(torch.randn(out_width, in_width, 3, 3))  # no gain: demodulation normalizes
        self.bias = nn.Parameter(torch.zeros(out_width))
        self.noise_strength = nn.Parameter(torch.zeros([]))  # 0: the network learns how much noise it wants
        self.register_buffer("noise_const", torch.randn(resolution, resolution))  # for repeatable renders
        self.up = up

    def forward(self, x, w, noise_mode="random", generator=None) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up)  # (B, O, H, W)
        B, _, H, W = x.shape
        if noise_mode == "random":  # one noise image per sample, shared by all channels
            x = x + randn((B, 1, H, W), generator, x.device).to(x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, "lrelu")


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation: the image's scale is the style's to set."""

    def __init__(self, in_width, channels, w_dim):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_width, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, in_width, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(in_width)  # equalized lr, folded into the styles as the reference does

    def forward(self, x, w) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return bias_act(modulated_conv2d(x, self.weight, styles, demodulate=False), self.bias)


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv,) conv, ToRGB; the image so far is FIR-upsampled and this block's RGB added."""

    def __init__(self, in_width, out_width, w_dim, resolution, channels):
        super().__init__()
        first = in_width == 0
        self.const = nn.Parameter(torch.randn(out_width, resolution, resolution)) if first else None
        self.conv0 = None if first else ModulatedConv2d(in_width, out_width, w_dim, resolution, up=True)
        self.conv1 = ModulatedConv2d(out_width, out_width, w_dim, resolution)
        self.torgb = ToRGB(out_width, channels, w_dim)
        self.num_conv = 1 if first else 2

    def forward(self, x, img, ws, noise_mode, generator):
        # ws (B, num_conv + 1, w_dim): the convs' styles, then ToRGB's (which is also the next block's first)
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # (B, width, 4, 4)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)  # (B, width, 2H, 2W)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode, generator)
        rgb = self.torgb(x, ws[:, self.num_conv])  # (B, C, H, W)
        img = rgb if img is None else upsample2d(img) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, C, R, R), fp32, not squashed (no tanh, as the reference)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        width = widths(cfg)
        self.blocks = nn.ModuleList(
            SynthesisBlock(width.get(res // 2, 0), width[res], cfg.w_dim, res, cfg.channels) for res in width
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1  # + the last ToRGB
        self.w_dim = cfg.w_dim

    def forward(self, ws, noise_mode="random", generator=None) -> torch.Tensor:
        assert ws.shape[1:] == (self.num_ws, self.w_dim), f"expected ws (B, {self.num_ws}, {self.w_dim})"
        if noise_mode not in NOISE_MODES:
            raise GenforgeError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index : index + block.num_conv + 1], noise_mode, generator)
            index += block.num_conv
        return img.float()


class Generator(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        _require_built(cfg)
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            cfg.z_dim, cfg.num_classes, cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr, cfg.w_avg_beta, self.num_ws
        )

    def forward(self, z, labels=None, truncation_psi=1.0, noise_mode="random", generator=None) -> torch.Tensor:
        """z (B, z_dim), labels (B,) class ids -> images (B, C, R, R); ``generator`` drives every random draw."""
        return self.images_and_ws(z, labels, truncation_psi, noise_mode, generator)[0]

    def images_and_ws(
        self, z, labels=None, truncation_psi=1.0, noise_mode="random", generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward, returning the ws (B, num_ws, w_dim) too (after style mixing, as the
        reference's run_G): path length regularisation differentiates the images with respect to them."""
        ws = self.mapping(z, labels, truncation_psi)  # (B, num_ws, w_dim)
        if self.training and self.cfg.style_mixing > 0:
            ws = self.mix_styles(ws, labels, generator)
        return self.synthesis(ws, noise_mode, generator), ws

    def mix_styles(self, ws, labels, generator) -> torch.Tensor:
        """Style mixing regularization: from a random layer on, a sample takes the styles of a second z,
        so that neighbouring layers' styles cannot rely on being correlated.

        Deviation: the reference draws one cutoff (and one coin) per batch; we draw per sample and
        select with torch.where, which needs no host sync and mixes a steadier share of each batch.
        """
        B, num_ws, _ = ws.shape
        ws2 = self.mapping(randn((B, self.cfg.z_dim), generator, ws.device), labels, update_w_avg=False)
        cutoff = randint(1, num_ws, (B,), generator, ws.device)
        mixed = rand((B,), generator, ws.device) < self.cfg.style_mixing
        cutoff = torch.where(mixed, cutoff, num_ws)  # num_ws: no layer mixed
        later = torch.arange(num_ws, device=ws.device)[None, :] >= cutoff[:, None]  # (B, num_ws)
        return torch.where(later[:, :, None], ws2.to(ws.dtype), ws)


# ---------------------------------------------------------------------------------------------
# Discriminator: residual blocks, minibatch standard deviation, projection conditioning
# ---------------------------------------------------------------------------------------------


class DBlock(nn.Module):
    """Two 3x3 convs (the second halves the resolution) beside a 1x1 downsampling skip; the sum is
    scaled by 1/sqrt(2) (folded into both branches' gains, as the reference) to keep its variance."""

    def __init__(self, in_width, out_width):
        super().__init__()
        self.conv0 = EqualConv2d(in_width, in_width, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_width, out_width, 3, activation="lrelu", down=True, gain=SQRT_HALF)
        self.skip = EqualConv2d(in_width, out_width, 1, bias=False, down=True, gain=SQRT_HALF)

    def forward(self, x):  # (B, in_width, H, W) -> (B, out_width, H/2, W/2)
        return self.skip(x) + self.conv1(self.conv0(x))


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """Append ``num_channels`` feature maps holding each group's standard deviation (averaged over its
    channel share and the pixels): D can see a batch lacking variety, which discourages collapse.

    x (B, C, H, W) -> (B, C + num_channels, H, W). Groups are samples {n, n + B/G, ...} as in the
    reference; G is the largest divisor of B that is at most min(group_size, B), so any batch works.
    """
    B, C, H, W = x.shape
    G = next(g for g in range(min(group_size, B), 0, -1) if B % g == 0)
    maps = num_channels
    y = x.float().reshape(G, B // G, maps, C // maps, H, W)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # (B/G, F, C/F, H, W) variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (B/G, F)
    y = y.reshape(-1, maps, 1, 1).repeat(G, 1, H, W)  # (B, F, H, W)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DEpilogue(nn.Module):
    """4x4 features -> (B,) logits: minibatch std, 3x3 conv, fc, output (projected on the class map)."""

    def __init__(self, width, cmap_dim, mbstd_group, mbstd_channels):
        super().__init__()
        self.mbstd_group, self.mbstd_channels, self.cmap_dim = mbstd_group, mbstd_channels, cmap_dim
        self.conv = EqualConv2d(width + mbstd_channels, width, 3, activation="lrelu")
        self.fc = EqualLinear(width * 4 * 4, width, activation="lrelu")
        self.out = EqualLinear(width, cmap_dim or 1)

    def forward(self, x, cmap):
        if self.mbstd_channels:
            x = minibatch_std(x, self.mbstd_group, self.mbstd_channels)  # (B, width + F, 4, 4)
        x = self.out(self.fc(self.conv(x).flatten(1)))  # (B, cmap_dim or 1)
        if cmap is None:
            return x[:, 0]
        # Projection conditioning (Miyato & Koyama 2018): the score is the output's agreement with the class's map.
        return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)


class Discriminator(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        _require_built(cfg)
        self.cfg = cfg
        width = widths(cfg)
        self.from_rgb = EqualConv2d(cfg.channels, width[cfg.resolution], 1, activation="lrelu")
        self.blocks = nn.Sequential(*[DBlock(width[res], width[res // 2]) for res in sorted(width, reverse=True)[:-1]])
        cmap_dim = width[4] if cfg.num_classes else 0
        self.mapping = (
            MappingNetwork(0, cfg.num_classes, cmap_dim, cfg.mapping_layers, cfg.mapping_lr, None)
            if cfg.num_classes
            else None
        )
        self.epilogue = DEpilogue(width[4], cmap_dim, cfg.mbstd_group, cfg.mbstd_channels)

    def forward(self, x, labels=None) -> torch.Tensor:
        """x (B, C, R, R) images in [-1, 1], labels (B,) -> (B,) raw logits, fp32."""
        r, c = self.cfg.resolution, self.cfg.channels
        assert x.shape[1:] == (c, r, r), f"expected (B, {c}, {r}, {r}), got {tuple(x.shape)}"
        x = self.blocks(self.from_rgb(x))  # (B, width[4], 4, 4)
        cmap = self.mapping(None, labels) if self.mapping is not None else None  # (B, cmap_dim)
        return self.epilogue(x, cmap).float()
