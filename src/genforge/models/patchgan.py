"""PatchGAN discriminator (pix2pix, Isola et al. 2017; taming-transformers' NLayerDiscriminator).

It returns a grid of logits, one per overlapping image patch, rather than one per image: for a
VQ-VAE it judges local texture, which is what an L2 reconstruction loss blurs. Sized for 32-64 px:
with the default num_layers=2 a 32 px image gives 6x6 logits, each seeing 34 px (padding included);
num_layers=1 gives 14x14 logits over 16 px patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from genforge.config import check, one_of, positive
from genforge.errors import GenforgeError


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


# BatchNorm is pix2pix's and taming's choice; GroupNorm does not depend on the batch's make-up
# (real and fake batches pass separately) and needs no SyncBatchNorm under DDP.
NORMS = {"batch": nn.BatchNorm2d, "group": _group_norm, "none": lambda channels: nn.Identity()}


@dataclass
class PatchGANConfig:
    channels: int = 0  # image channels; 0: taken from the data at build time
    width: int = 64  # width of the first layer; doubles per layer, up to 8x
    num_layers: int = 2  # stride-2 layers; each halves the logit grid and widens the patch
    norm: str = "batch"  # batch | group | none

    def __post_init__(self):
        check(self.channels in (0, 1, 3), "channels", "must be 1 or 3", self.channels)
        positive(self, "width")
        check(1 <= self.num_layers <= 5, "num_layers", "must be in 1..5", self.num_layers)
        one_of(self, "norm", NORMS)


class PatchGAN(nn.Module):
    def __init__(self, config: PatchGANConfig):
        super().__init__()
        if not config.channels:
            raise GenforgeError("discriminator.channels must be set (from the data) before building it")
        self.config = config
        norm = NORMS[config.norm]
        has_bias = config.norm == "none"  # a norm's shift makes a conv bias redundant
        width = config.width
        layers: list[nn.Module] = [nn.Conv2d(config.channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for layer in range(1, config.num_layers + 1):
            wider = config.width * min(2**layer, 8)
            stride = 2 if layer < config.num_layers else 1  # the last one widens without shrinking
            layers += [nn.Conv2d(width, wider, 4, stride, 1, bias=has_bias), norm(wider), nn.LeakyReLU(0.2)]
            width = wider
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def output_size(self, resolution: int) -> int:
        """Side of the logit grid for a square input of this side."""
        size = resolution
        for module in self.net:
            if isinstance(module, nn.Conv2d):
                size = (size + 2 - 4) // module.stride[0] + 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, 1, h, w) logits, one per patch."""
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise GenforgeError(f"PatchGAN expects (B, {self.config.channels}, H, W), got {tuple(x.shape)}")
        if self.output_size(min(x.shape[2:])) < 1:
            raise GenforgeError(f"images of {tuple(x.shape[2:])} px are too small for {self.config.num_layers} layers")
        return self.net(x)


def _init(module: nn.Module) -> None:
    # pix2pix / taming initialisation: N(0, 0.02) convolutions, N(1, 0.02) norm scales
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
