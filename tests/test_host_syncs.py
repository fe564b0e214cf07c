"""The VQ-VAE's and the prior's training steps never read a tensor back to the host.

On a GPU every such read (``.item()``, ``int(t)``, ``bool(t)``, ``.cpu()``, ``nonzero``, a boolean
mask as an index) waits for the queue to drain. On the CPU they cost nothing, so this test does
not time them: it watches the Python entry points through which genforge's own code would make
one, and fails on any call made from a genforge source file during a step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import genforge
from genforge.config import from_dict, to_dict
from genforge.families.prior import PriorRunConfig, PriorTrainer
from genforge.families.vqvae import VQVAERunConfig, VQVAETrainer, fit_to_data
from genforge.models.transformer import TransformerConfig
from genforge.models.vqvae import VQVAE

SOURCE = str(Path(genforge.__file__).parent)
READS = ("item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__")


class HostReads:
    """Records calls of ``READS`` (and boolean-mask indexing) made from genforge's sources."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        self.watching = False
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch, "nonzero", self._wrap("torch.nonzero", torch.nonzero))
        for name in ("__getitem__", "__setitem__"):
            monkeypatch.setattr(torch.Tensor, name, self._wrap_index(name, getattr(torch.Tensor, name)))

    def _caller(self) -> str | None:
        frame = sys._getframe(2)
        where = frame.f_code.co_filename
        return f"{where}:{frame.f_lineno}" if where.startswith(SOURCE) else None

    def _wrap(self, name, original):
        def wrapper(*args, **kwargs):
            if self.watching and (where := self._caller()):
                self.calls.append(f"{name} at {where}")
            return original(*args, **kwargs)

        return wrapper

    def _wrap_index(self, name, original):
        def wrapper(tensor, index, *rest):
            parts = index if isinstance(index, tuple) else (index,)
            boolean = any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)
            if self.watching and boolean and (where := self._caller()):
                self.calls.append(f"boolean-mask {name} at {where}")
            return original(tensor, index, *rest)

        return wrapper


def vqvae_trainer() -> VQVAETrainer:
    values = {
        "model": {"width": 8, "latent_dim": 8, "quantizer": {"num_codes": 16, "restart_after": 2}},
        "train": {"batch_size": 8, "precision": "fp32"},
    }
    cfg = fit_to_data(from_dict(VQVAERunConfig, values), 16, 1)
    return VQVAETrainer(cfg, torch.device("cpu"))


def prior_trainer(network: str) -> PriorTrainer:
    vq_cfg = fit_to_data(from_dict(VQVAERunConfig, {"model": {"width": 8, "latent_dim": 8}}), 16, 1)
    model = TransformerConfig(vocab_size=16, grid_h=4, grid_w=4, num_classes=3, n_layer=1, n_head=2, n_embd=16)
    values = {"network": network, "optim": {"lr_schedule": "cosine"}, "train": {"steps": 10}}
    cfg = from_dict(PriorRunConfig, {**values, "model": to_dict(model)})
    return PriorTrainer(cfg, VQVAE(vq_cfg.model), to_dict(vq_cfg), torch.device("cpu"))


def test_vqvae_step_reads_nothing_back(monkeypatch):
    trainer = vqvae_trainer()
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    trainer.train_step(x, None)  # the first step may ask whether the codebook needs k-means
    reads = HostReads(monkeypatch)
    reads.watching = True
    for _ in range(4):  # restart_after=2: dead-code restarts happen in here
        trainer.train_step(x, None)
    reads.watching = False
    assert reads.calls == []
    assert trainer.log_extras()["codebook_usage"] > 0  # read at log time, where it is allowed


@pytest.mark.parametrize("network", ["ar", "maskgit"])
def test_prior_step_reads_nothing_back(monkeypatch, network):
    trainer = prior_trainer(network)
    codes = torch.randint(0, 16, (8, 4, 4))
    labels = torch.randint(0, 3, (8,))
    reads = HostReads(monkeypatch)
    reads.watching = True
    for _ in range(3):
        trainer.train_step(codes, labels)
    reads.watching = False
    assert reads.calls == []


def test_the_watcher_sees_a_read(monkeypatch):
    """The detector itself: a read made from genforge's sources during a step is caught."""
    trainer = prior_trainer("ar")
    reads = HostReads(monkeypatch)
    reads.watching = True
    trainer.net.eval()  # outside training mode, codes are checked in full: a host read
    trainer.net.loss(torch.randint(0, 16, (2, 4, 4)))
    reads.watching = False
    assert any("__int__" in call or "item" in call for call in reads.calls), reads.calls
