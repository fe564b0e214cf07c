"""VQ-VAE (van den Oord et al. 2017): a convolutional encoder, a quantizer, a convolutional decoder.

The encoder halves the resolution log2(downsample) times with 4x4 stride-2 convolutions and
doubles the width each time, so every level costs about the same; residual blocks (the paper's
ReLU, 3x3, ReLU, 1x1) sit at every level. The decoder mirrors it with transposed convolutions.
Images are (B, C, H, W) in [-1, 1]; the decoder's output is not squashed (a tanh slows the fit
of the extremes), so clamp it before showing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from genforge.config import ConfigError, check, non_negative, positive
from genforge.errors import GenforgeError
from genforge.models.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer

DOWNSAMPLES = (2, 4, 8, 16)


@dataclass
class VQVAEConfig:
    channels: int = 0  # image channels, 1 grey or 3 colour; 0: taken from the data at build time
    resolution: int = 0  # square side, divisible by downsample; 0: taken from the data at build time
    width: int = 32  # layer width at full resolution; doubles with each downsampling
    max_width: int = 256
    num_res_blocks: int = 1  # per resolution level, in the encoder and again in the decoder
    downsample: int = 4  # image side / code-grid side: 32 px -> 8x8 codes
    latent_dim: int = 64  # channels of the encoder's output and the decoder's input
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self):
        positive(self, "width", "max_width", "latent_dim")
        non_negative(self, "num_res_blocks", "resolution")
        check(self.channels in (0, 1, 3), "channels", "must be 1 or 3", self.channels)
        check(
            self.downsample in DOWNSAMPLES,
            "downsample",
            f"must be one of {', '.join(map(str, DOWNSAMPLES))}",
            self.downsample,
        )
        if self.resolution % self.downsample:
            padded = -(-self.resolution // self.downsample) * self.downsample
            raise ConfigError(
                "resolution",
                f"is not divisible by downsample {self.downsample}; pad the images to {padded} "
                f"(--set data.resolution={padded} data.fit=pad) or use a smaller downsample",
                self.resolution,
            )

    def widths(self) -> list[int]:
        """Channel width per resolution level, full resolution first."""
        levels = self.downsample.bit_length()  # downsample = 2^(levels - 1)
        return [min(self.width * 2**k, self.max_width) for k in range(levels)]


class ResBlock(nn.Module):
    """x + 1x1(relu(3x3(relu(x)))), with a bottleneck of half the width (VQ-VAE paper, sec. 4.1)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 2, 1)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Encoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        widths = config.widths()
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 3, padding=1)]
        for level, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(config.num_res_blocks)]
            if level + 1 < len(widths):
                layers.append(nn.Conv2d(width, widths[level + 1], 4, stride=2, padding=1))  # halves H, W
        layers += [nn.ReLU(), nn.Conv2d(widths[-1], config.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        widths = config.widths()[::-1]  # code grid first
        layers: list[nn.Module] = [nn.Conv2d(config.latent_dim, widths[0], 3, padding=1)]
        for level, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(config.num_res_blocks)]
            if level + 1 < len(widths):
                layers.append(nn.ConvTranspose2d(width, widths[level + 1], 4, stride=2, padding=1))  # doubles H, W
        layers += [nn.ReLU(), nn.Conv2d(widths[-1], config.channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    @property
    def last_layer(self) -> nn.Conv2d:
        """The output convolution, whose weight scales the adversarial loss (losses.adaptive_weight)."""
        return self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        if not config.channels or not config.resolution:
            raise GenforgeError(
                "model.channels and model.resolution must be set (from the data) before building a VQ-VAE"
            )
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = build_quantizer(config.quantizer, config.latent_dim)
        self.decoder = Decoder(config)

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.config.resolution // self.config.downsample
        return side, side

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def _check_images(self, x: torch.Tensor) -> None:
        c, r = self.config.channels, self.config.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, r, r):
            raise GenforgeError(f"VQ-VAE expects images of shape (B, {c}, {r}, {r}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, latent_dim, h, w) continuous encoder output z_e."""
        self._check_images(x)
        z = self.encoder(x)
        assert z.shape[2:] == self.grid_size, f"encoder gave {tuple(z.shape)}, expected grid {self.grid_size}"
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """(B, C, H, W) -> reconstruction (B, C, H, W) and the quantizer's output."""
        quantized = self.quantizer(self.encode(x))
        return self.decoder(quantized.quantized), quantized

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h, w) code indices; no training-time side effects."""
        return self.quantizer.to_indices(self.encode(x))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, C, H, W) images."""
        if tuple(indices.shape[1:]) != self.grid_size:
            raise GenforgeError(
                f"code grid must be (B, {self.grid_size[0]}, {self.grid_size[1]}), got {tuple(indices.shape)}"
            )
        return self.decoder(self.quantizer.lookup(indices))


def nearest_resolution(side: int, downsample: int = 4) -> int:
    """The multiple of ``downsample`` closest to ``side`` (ties go up: pad rather than cut)."""
    below = max(downsample, side // downsample * downsample)
    above = -(-side // downsample) * downsample
    return below if side - below < above - side else above
