"""DCGAN (Radford et al. 2016): transposed-convolution generator, strided-convolution discriminator.

The founding document's architecture, generalised to any square resolution r = s0 * 2^k with a
start size s0 in 4..7 (28 = 7*4, 32 = 4*8, 48 = 6*8, 64 = 4*16), grey or colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from genforge.errors import GenforgeError

D_NORMS = ("batch", "spectral", "none")


@dataclass
class DCGANConfig:
    z_dim: int = 100
    g_channels: int = 64  # width of the generator's last hidden layer; doubles per step towards z
    d_channels: int = 64  # width of the discriminator's first layer; doubles per step down
    max_channels: int = 512
    d_norm: str = "batch"  # batch | spectral | none
    resolution: int = 0  # 0: taken from the data at build time
    channels: int = 0  # 0: taken from the data at build time

    def __post_init__(self):
        for name in ("z_dim", "g_channels", "d_channels", "max_channels"):
            if getattr(self, name) <= 0:
                raise GenforgeError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_norm not in D_NORMS:
            raise GenforgeError(f"model.d_norm must be one of {', '.join(D_NORMS)}, got {self.d_norm!r}")
        if self.resolution:
            layout(self.resolution)
        if self.channels not in (0, 1, 3):
            raise GenforgeError(f"model.channels must be 1 or 3, got {self.channels}")


def layout(resolution: int) -> tuple[int, int]:
    """resolution -> (start size s0, number of 2x steps k) with resolution = s0 * 2^k."""
    steps = 0
    size = resolution
    while size > 7 and size % 2 == 0:
        size //= 2
        steps += 1
    if not (4 <= size <= 7) or steps < 2:
        raise GenforgeError(
            f"DCGAN resolution {resolution} is not supported: it must be s*2^k with s in 4..7 and k >= 2 "
            "(e.g. 28, 32, 48, 64); fit the data with --set data.resolution=32"
        )
    return size, steps


def _widths(base: int, steps: int, cap: int) -> list[int]:
    """Channel widths from the largest spatial size to the smallest: base, 2*base, ..."""
    return [min(base * 2**i, cap) for i in range(steps)]


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        start, steps = layout(cfg.resolution)
        widths = _widths(cfg.g_channels, steps, cfg.max_channels)[::-1]  # smallest size first
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim, widths[0], start, 1, 0, bias=False),  # (B, w0, s0, s0)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.cfg.z_dim, f"expected (B, {self.cfg.z_dim}), got {tuple(z.shape)}"
        return self.net(z[:, :, None, None])  # (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        start, steps = layout(cfg.resolution)
        widths = _widths(cfg.d_channels, steps, cfg.max_channels)
        wrap = spectral_norm if cfg.d_norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(cfg.channels, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers.append(wrap(nn.Conv2d(cin, cout, 4, 2, 1, bias=cfg.d_norm != "batch")))
            if cfg.d_norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(wrap(nn.Conv2d(widths[-1], 1, start, 1, 0)))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c = self.cfg.resolution, self.cfg.channels
        assert x.shape[1:] == (c, r, r), f"expected (B, {c}, {r}, {r}), got {tuple(x.shape)}"
        return self.net(x).flatten()  # (B,) raw logits


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, BN scale N(1, 0.02), as in the DCGAN paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        weight = module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
