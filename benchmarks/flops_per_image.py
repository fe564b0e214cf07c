"""FLOPs per training image of each family's default config, counted by PyTorch itself.

``torch.utils.flop_counter.FlopCounterMode`` counts the floating-point operations of matrix
multiplies, convolutions and attention (forward and backward; elementwise work, normalisation and
the optimizer are not counted; CPU attention kernels are counted with PyTorch's own attention
formula) over ``--steps`` training steps after a first, uncounted one (which
holds one-off work: the VQ k-means init, step 0's R1). 16 steps hold StyleGAN2's R1 (every 16
steps by default) at its usual rate. The figure is what docs/gpu.md turns into a
paper estimate of GPU images/s; nothing here is timed.

    python benchmarks/flops_per_image.py [--families gan,stylegan2,vqvae,prior,maskgit] [--data fashion-mnist,emoji]
        [--batch 8] [--steps 16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from common import machine, table
from genforge import families
from genforge.progress import SILENT
from genforge.training.batches import Batches, on_device
from precision_probe import prepared_for

CPU = torch.device("cpu")


def _attention(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward(grad_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


# On CPU, scaled_dot_product_attention runs kernels FlopCounterMode has no formula for: count them
# as it counts the GPU's flash attention (the full T x T score matrix, no causal discount).
aten = torch.ops.aten
CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}


class _GlobalOnly:
    """FlopCounterMode's per-module tracker hooks the backward pass, which breaks autograd.grad
    (R1's double backward); this one books every FLOP under "Global" alone."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        pass


def flops_per_image(spec, prepared, steps: int) -> float:
    """Counted FLOPs of ``steps`` fp32 steps (after one uncounted) over the images they trained on."""
    train = prepared.config.train
    train.precision, train.channels_last = "fp32", False
    trainer = spec.build(prepared, CPU, torch.float32)
    labels = on_device(prepared.labels, CPU) if prepared.labels is not None else None
    per_step = getattr(trainer, "batches_per_step", 1)
    batches = Batches(on_device(prepared.images, CPU), labels, train.batch_size, train.seed, per_step=per_step)
    trainer.train_step(*batches.get(0))
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        for step in range(1, steps + 1):
            trainer.train_step(*batches.get(step))
    return counter.get_total_flops() / (steps * train.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join([*families.names(), "maskgit"]), help="maskgit: the prior's")
    parser.add_argument("--data", default="fashion-mnist,emoji", help="data of the families that take data")
    parser.add_argument("--batch", type=int, default=8, help="train.batch_size (FLOPs per image barely depend on it)")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.families.split(","):
            for data in args.data.split(","):
                if name in ("prior", "maskgit"):  # on the codes of a Fashion-MNIST VQ-VAE, whatever --data says
                    if data != args.data.split(",")[0]:
                        continue
                    spec, prepared = prepared_for(name, Path(scratch), 1.0)
                    data = "codes"
                    prepared.config.train.batch_size = args.batch
                else:
                    spec = families.get(name)
                    sets = [f"data.source={data}", f"data.limit={64 * args.batch}", f"train.batch_size={args.batch}"]
                    prepared = spec.prepare(spec.resolve("default", None, sets), SILENT)
                m = prepared.config.model
                side = (
                    getattr(m, "resolution", None) or f"{getattr(m, 'grid_h', '?')}x{getattr(m, 'grid_w', '?')} codes"
                )
                flops = flops_per_image(spec, prepared, args.steps)
                rows.append({"family": name, "data": data, "input": side, "GFLOP per image": flops / 1e9})
                print(f"{name} on {data}: {flops / 1e9:.3f} GFLOP per training image", flush=True)
    print(f"\n# {machine()}")
    print(f"# FlopCounterMode over {args.steps} fp32 steps after one uncounted, batch {args.batch}")
    print(table(rows, ["family", "data", "input", "GFLOP per image"]))


if __name__ == "__main__":
    main()
