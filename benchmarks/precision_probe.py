"""What `train.precision: auto` measures on this machine, for every family, in one run.

For each family's default config on Fashion-MNIST (emoji for the colour GANs with --colour), it
runs the same probe training runs at start-up (fresh, not from the cache): each candidate
(fp32 / bf16 autocast, channels_last off / on) timed on the family's own training step (the same
warm-up and number of timed steps for all), and the choice it makes. The fixed settings are the table's rows: `--precision X --set train.channels_last=Y`.

    python benchmarks/precision_probe.py [--seconds 4] [--families gan,stylegan2,vqvae,prior,maskgit]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from common import machine, table
from genforge import families
from genforge.progress import SILENT
from genforge.training.batches import Batches, on_device
from genforge.training.probe import choose
from genforge.training.runs import train

CPU = torch.device("cpu")


def prepared_for(name: str, scratch: Path, seconds: float):
    """(spec, prepared) of a family's default config, ready for the probe."""
    sets = [f"train.probe_seconds={seconds}"]
    if name in ("prior", "maskgit"):
        vq = families.get("vqvae")
        vq_run = scratch / "vqvae"
        if not vq_run.exists():  # any trained VQ-VAE gives the prior its codes; one step is enough
            config = vq.resolve(
                "default", None, ["train.precision=fp32", "train.channels_last=false"], {"train": {"steps": 1}}
            )
            train(vq, config, vq_run)
        spec = families.get("prior")
        config = spec.resolve(name if name == "maskgit" else "default", None, sets, {"vqvae": str(vq_run)})
        prepared = spec.prepare(config, SILENT)
        spec.training_data(prepared, scratch / name, CPU, SILENT)
        return spec, prepared
    spec = families.get(name)
    return spec, spec.prepare(spec.resolve("default", None, sets), SILENT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per candidate")
    parser.add_argument("--families", default="gan,stylegan2,vqvae,prior,maskgit")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["GENFORGE_CACHE"] = str(Path(scratch) / "cache")  # measure, never reuse a cached choice
        for name in args.families.split(","):
            spec, prepared = prepared_for(name, Path(scratch), args.seconds)
            examples = on_device(prepared.images, CPU)
            labels = on_device(prepared.labels, CPU) if prepared.labels is not None else None
            batches = Batches(examples, labels, prepared.config.train.batch_size, 0)

            def batch(per_step: int, batches=batches):
                batches.per_step = per_step
                return batches.get(0)

            choice = choose(spec, prepared, CPU, batch)
            chosen = f"{choice.precision}" + (" + channels_last" if choice.channels_last else "")
            for row in choice.table:
                rows.append(
                    {
                        "family": name,
                        "batch": prepared.config.train.batch_size,
                        "setting": row["setting"],
                        "images/s": row["images_per_s"],
                        "note": row.get("ruled_out", ""),
                        "auto picks": "**yes**" if row["setting"] == chosen else "",
                    }
                )
            print(f"{name}: {choice.describe()}", flush=True)
    print(f"\n# {machine()}")
    print(
        f"# the family's own training step, after warm-up: the first candidate timed for {args.seconds:g} s, "
        "the others for as many steps"
    )
    print(table(rows, ["family", "batch", "setting", "images/s", "note", "auto picks"]))


if __name__ == "__main__":
    main()
