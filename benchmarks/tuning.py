"""Every arm of a quality benchmark treated alike: all tuned with ``genforge tune``, or none.

A run that has sampling settings (a GAN's truncation, StyleGAN2's psi, a prior's decoding options)
is tuned before it is scored, or, with tuning off, scored with its network's defaults: a
``sampling.json`` an earlier tuned run left in the folder is removed, so it cannot tune one arm
and not another.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genforge import families
from genforge.commands.tune import tune
from genforge.families.sampling import TunedSampling, read_sampling
from genforge.progress import Reporter
from genforge.runfolder import SAMPLING, RunFolder


def settle_sampling(run: Path, tuned: bool, n: int, features: str | None, device: torch.device) -> None:
    """Tune ``run``'s sampling settings (when it has any), or make sure it has no tuned ones."""
    _, model = families.load(run, device)
    if not isinstance(model, TunedSampling):
        return  # nothing to tune (a VQ-VAE): the same for every setting of the flag
    if tuned:
        tune(run, n=n, features=features, device=device, reporter=Reporter())
    elif RunFolder(run).sampling.is_file():
        RunFolder(run).sampling.unlink()
        print(f"{run}: removed {SAMPLING} (--no-tune: every arm samples with its network's defaults)")


def sampling_used(run: Path) -> str:
    """The table's word on an arm's sampling: the tuned settings, or "defaults (not tuned)"."""
    tuning = read_sampling(run)
    if tuning is None:
        return "defaults (not tuned)"
    chosen = ", ".join(f"{k} {'off' if v is None else v}" for k, v in tuning["chosen"].items())
    return f"tuned: {chosen}"
