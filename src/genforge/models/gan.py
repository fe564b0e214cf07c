"""DCGAN (Radford et al. 2016): transposed-convolution generator, strided-convolution discriminator.

Generalised to any square resolution r = s0 * 2^k with a start size s0 in 4..7 (28 = 7*4,
32 = 4*8, 48 = 6*8, 64 = 4*16), grey or colour, and optionally class-conditional. The
generator reads the class either as a learned embedding concatenated to z (``g_class: concat``,
Mirza & Osindero 2014) or through class-conditional batch norm, a per-class scale and shift after
every normalisation (``g_class: cbn``; de Vries et al. 2017, the generator of Miyato & Koyama
2018). The discriminator adds a projection term <embed(y), phi(x)> to its output (Miyato &
Koyama 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from genforge.config import check, non_negative, one_of, positive
from genforge.errors import GenforgeError

D_NORMS = ("batch", "spectral", "none")
G_CLASS = ("concat", "cbn")


@dataclass
class DCGANConfig:
    z_dim: int = 100
    g_width: int = 64  # width of the generator's last hidden layer; doubles per step towards z
    d_width: int = 64  # width of the discriminator's first layer; doubles per step down
    max_width: int = 512
    d_norm: str = "batch"  # batch | spectral | none
    resolution: int = 0  # 0: taken from the data at build time
    channels: int = 0  # image channels, 1 or 3; 0: taken from the data at build time
    num_classes: int = 0  # > 0: class-conditional generator and projection discriminator
    class_dim: int = 0  # g_class concat: size of the generator's class embedding; 0 = z_dim // 2
    g_class: str = "concat"  # how a conditional generator reads the class: concat | cbn

    def __post_init__(self):
        positive(self, "z_dim", "g_width", "d_width", "max_width")
        non_negative(self, "num_classes", "class_dim")
        one_of(self, "d_norm", D_NORMS)
        one_of(self, "g_class", G_CLASS)
        if self.resolution:
            layout(self.resolution)
        check(self.channels in (0, 1, 3), "channels", "must be 1 or 3", self.channels)


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


def nearest_resolution(side: int) -> int:
    """The supported resolution closest to ``side`` (ties go up, so images are padded, not cut)."""
    supported = sorted({s * 2**k for s in range(4, 8) for k in range(2, 9)})
    return min(supported, key=lambda r: (abs(r - side), -r))


def _widths(base: int, steps: int, cap: int) -> list[int]:
    """Channel widths from the largest spatial size to the smallest: base, 2*base, ..."""
    return [min(base * 2**i, cap) for i in range(steps)]


class ClassBatchNorm(nn.Module):
    """Batch norm whose scale and shift are the class's own: BN(x) * gain[y] + bias[y].

    The normalisation statistics are shared by all classes; each class learns where to put the
    normalised features. Gains start at N(1, 0.02) and biases at 0, as DCGAN starts its BN affine.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.gain.weight, 1.0, 0.02)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(labels).to(h.dtype)[:, :, None, None] + self.bias(labels).to(h.dtype)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        start, steps = layout(cfg.resolution)
        widths = _widths(cfg.g_width, steps, cfg.max_width)[::-1]  # smallest size first
        cbn = bool(cfg.num_classes) and cfg.g_class == "cbn"
        concat = bool(cfg.num_classes) and not cbn
        class_dim = (cfg.class_dim or max(1, cfg.z_dim // 2)) if concat else 0
        self.class_emb = nn.Embedding(cfg.num_classes, class_dim) if concat else None

        def norm(width: int) -> nn.Module:
            return ClassBatchNorm(width, cfg.num_classes) if cbn else nn.BatchNorm2d(width)

        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim + class_dim, widths[0], start, 1, 0, bias=False),  # (B, w0, s0, s0)
            norm(widths[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), norm(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """(B, z_dim) latents [and (B,) class labels] -> (B, C, H, W) images in [-1, 1].

        ``generator`` is accepted for a common signature with generators that draw noise; DCGAN draws none.
        """
        assert z.ndim == 2 and z.shape[1] == self.cfg.z_dim, f"expected (B, {self.cfg.z_dim}), got {tuple(z.shape)}"
        if self.cfg.num_classes and labels is None:
            raise GenforgeError("this generator is class-conditional: give a class label per sample")
        if self.class_emb is not None:
            z = torch.cat([z, self.class_emb(labels).to(z.dtype)], dim=1)  # (B, z_dim + class_dim)
        h = z[:, :, None, None]
        for layer in self.net:  # class batch norms also take the labels
            h = layer(h, labels) if isinstance(layer, ClassBatchNorm) else layer(h)
        return h


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        start, steps = layout(cfg.resolution)
        widths = _widths(cfg.d_width, steps, cfg.max_width)
        convs = [nn.Conv2d(cfg.channels, widths[0], 4, 2, 1)]
        convs += [
            nn.Conv2d(cin, cout, 4, 2, 1, bias=cfg.d_norm != "batch") for cin, cout in zip(widths[:-1], widths[1:])
        ]
        out = nn.Conv2d(widths[-1], 1, start, 1, 0)  # (B, 1, 1, 1)
        for conv in (*convs, out):
            _dcgan_init(conv)
        # Spectral norm after the weights are initialised: its power-iteration vectors are
        # estimated from the weight it is given, so initialising afterwards would leave them stale.
        wrap = spectral_norm if cfg.d_norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [wrap(convs[0]), nn.LeakyReLU(0.2, True)]
        for conv in convs[1:]:
            layers.append(wrap(conv))
            if cfg.d_norm == "batch":
                bn = nn.BatchNorm2d(conv.out_channels)
                _dcgan_init(bn)
                layers.append(bn)
            layers.append(nn.LeakyReLU(0.2, True))
        self.net = nn.Sequential(*layers, wrap(out))  # features (B, C_last, s0, s0), then the output conv
        self.class_emb = None
        if cfg.num_classes:  # projection: <embed(y), sum-pooled features>
            embedding = nn.Embedding(cfg.num_classes, widths[-1])
            nn.init.normal_(embedding.weight, 0.0, 0.02)
            self.class_emb = wrap(embedding)  # spectral norm after the init, as for the convolutions

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        r, c = self.cfg.resolution, self.cfg.channels
        assert x.shape[1:] == (c, r, r), f"expected (B, {c}, {r}, {r}), got {tuple(x.shape)}"
        h = self.net[:-1](x)  # (B, C_last, s0, s0)
        logits = self.net[-1](h).flatten()  # (B,) raw logits
        if self.class_emb is not None:
            if labels is None:
                raise GenforgeError("this discriminator is class-conditional: give a class label per image")
            logits = logits + (self.class_emb(labels).to(h.dtype) * h.sum(dim=(2, 3))).sum(1)
        return logits


def _weight(module: nn.Module) -> torch.Tensor:
    return module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, BN scale N(1, 0.02), as in the DCGAN paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(_weight(module), 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
