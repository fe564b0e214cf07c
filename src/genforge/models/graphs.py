"""Exportable graphs: a model's inference path wrapped as plain tensors in, plain tensors out.

Each wrapper has a dynamic batch dimension and says what it is (``name``, ``input_names``,
``output_names``, ``example_inputs``, ``describe``), so ``commands/export.py`` can write it as an
ONNX file and check it without knowing the model:

    GeneratorGraph  z float32 (B, z_dim) [, class int64 (B,)]  -> images float32 (B, C, H, W) in [-1, 1]
    EncoderGraph    images float32 (B, C, H, W) in [-1, 1]     -> codes int64 (B, h, w)
    DecoderGraph    codes int64 (B, h, w)                      -> images float32 (B, C, H, W) in [-1, 1]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from genforge.models.quantizers import VectorQuantizer
from genforge.models.vqvae import VQVAE


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


class GeneratorGraph(nn.Module):
    """z (B, z_dim) [, class (B,)] -> images (B, C, H, W) clamped to [-1, 1].

    A conditional generator (``num_classes > 0``) is called as ``generator(z, labels)``.
    """

    name = "generator"
    output_names = ("images",)

    def __init__(self, generator: nn.Module, z_dim: int, num_classes: int = 0, **call: Any):
        super().__init__()
        self.generator = generator
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.call = call  # fixed keyword arguments, e.g. a StyleGAN2's noise_mode="const"
        self.input_names = ("z", "class") if num_classes else ("z",)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        images = self.generator(z, labels if self.num_classes else None, **self.call)  # (B, C, H, W)
        return images.clamp(-1.0, 1.0)

    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(batch, self.z_dim, generator=g).to(_device(self))
        if not self.num_classes:
            return (z,)
        return z, torch.randint(self.num_classes, (batch,), generator=g).to(z.device)

    def describe(self) -> dict[str, str]:
        facts = {"z": "standard normal, float32 (batch, z_dim)", "z_dim": str(self.z_dim)}
        if self.num_classes:
            facts["num_classes"] = str(self.num_classes)
        return facts


def _code_indices(vqvae: VQVAE, z: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) encoder output -> (B, h, w) code indices, as a graph a trace can record.

    ``VectorQuantizer.to_indices`` chunks rows in a Python loop (``nearest_code``), which a
    trace freezes to the example's batch size; here the same distances in one piece. Remove
    this once ``nearest_code`` skips chunking while tracing.
    """
    quantizer = vqvae.quantizer
    if not isinstance(quantizer, VectorQuantizer):
        return quantizer.to_indices(z)
    b, _, h, w = z.shape
    rows, codes = quantizer._rows(z), quantizer._codes()  # (N, d), (K, d)
    if quantizer.config.cosine:  # unit vectors: nearest = largest dot product
        return (rows @ codes.t()).argmax(1).reshape(b, h, w)
    return (codes.pow(2).sum(1) - 2 * rows @ codes.t()).argmin(1).reshape(b, h, w)


class EncoderGraph(nn.Module):
    """images (B, C, H, W) in [-1, 1] -> int64 code grid (B, h, w)."""

    name = "encoder"
    input_names = ("images",)
    output_names = ("codes",)

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _code_indices(self.vqvae, self.vqvae.encode(images))

    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        # the encoder takes what the decoder makes: its shape, without naming config fields
        codes = torch.zeros(1, *self.vqvae.grid_size, dtype=torch.long, device=_device(self))
        with torch.no_grad():
            shape = self.vqvae.decode_indices(codes).shape[1:]  # (C, H, W)
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(batch, *shape, generator=g).mul(2).sub(1).to(codes.device),)

    def describe(self) -> dict[str, str]:
        return {"grid": "x".join(map(str, self.vqvae.grid_size)), "num_codes": str(self.vqvae.num_codes)}


class DecoderGraph(nn.Module):
    """int64 code grid (B, h, w) -> images (B, C, H, W) clamped to [-1, 1]."""

    name = "decoder"
    input_names = ("codes",)
    output_names = ("images",)

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode_indices(codes).clamp(-1.0, 1.0)  # the decoder's output is not squashed

    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(self.vqvae.num_codes, (batch, *self.vqvae.grid_size), generator=g)
        return (codes.to(_device(self)),)

    def describe(self) -> dict[str, str]:
        return {"grid": "x".join(map(str, self.vqvae.grid_size)), "num_codes": str(self.vqvae.num_codes)}
