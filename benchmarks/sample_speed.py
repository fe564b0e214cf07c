"""Sampling speed (images/s) of each generator at its default size, on this machine.

GAN sampling; the autoregressive prior with and without its key/value cache; MaskGIT parallel
decoding. Prior samples include decoding the codes with the VQ-VAE decoder. Speed does not depend
on the weights, so freshly initialised models of the default configs are timed.

    python benchmarks/sample_speed.py [--n 64] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from dataclasses import asdict

import torch

from genforge.models.gan import DCGANConfig, Generator
from genforge.models.maskgit import MaskGIT, MaskGITConfig
from genforge.models.prior import PriorConfig, TransformerPrior
from genforge.models.vqvae import VQVAE, VQVAEConfig


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per call (the default grid)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731

    gan = Generator(DCGANConfig(resolution=32, channels=1)).to(device).eval()
    vqvae = VQVAE(VQVAEConfig(in_channels=1, resolution=32)).to(device).eval()
    grid = vqvae.grid_size
    prior_cfg = PriorConfig(vocab_size=vqvae.num_codes, grid_h=grid[0], grid_w=grid[1], num_classes=10)
    prior = TransformerPrior(prior_cfg).to(device).eval()
    maskgit = MaskGIT(MaskGITConfig(**asdict(prior_cfg))).to(device).eval()
    labels = torch.arange(args.n, device=device) % 10

    @torch.no_grad()
    def sample_gan():
        return gan(torch.randn(args.n, 100, device=device, generator=g()))

    @torch.no_grad()
    def sample_ar(use_cache: bool):
        return vqvae.decode_indices(prior.generate(args.n, labels=labels, use_cache=use_cache, generator=g()))

    @torch.no_grad()
    def sample_maskgit(steps: int):
        return vqvae.decode_indices(maskgit.generate(args.n, labels=labels, steps=steps, generator=g()))

    rows = [
        ("GAN (DCGAN generator)", lambda: sample_gan()),
        ("AR prior, no cache", lambda: sample_ar(False)),
        ("AR prior, KV cache", lambda: sample_ar(True)),
        ("MaskGIT, 8 steps", lambda: sample_maskgit(8)),
        ("MaskGIT, 4 steps", lambda: sample_maskgit(4)),
    ]
    print(
        f"# {datetime.date.today()} | {platform.machine()} | {os.cpu_count()} cores | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()} | device {device} | {args.n} images per call, {grid[0]}x{grid[1]} codes"
    )
    print("| sampler | seconds / call | images/s |")
    print("|---|---|---|")
    speeds = {}
    for name, fn in rows:
        seconds = best_seconds(fn, args.repeats)
        speeds[name] = args.n / seconds
        print(f"| {name} | {seconds:.3f} | {speeds[name]:.0f} |", flush=True)
    print()
    print(f"KV cache vs no cache: {speeds['AR prior, KV cache'] / speeds['AR prior, no cache']:.1f}x (goal >= 5x)")
    print(
        f"MaskGIT 8 steps vs cached AR: {speeds['MaskGIT, 8 steps'] / speeds['AR prior, KV cache']:.2f}x (goal >= 5x)"
    )


if __name__ == "__main__":
    main()
