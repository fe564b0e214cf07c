"""benchmarks/gpu_check.py, the first-day-on-a-GPU command: on a machine without CUDA it says so in
one line and exits 0; its parts (the doc section it replaces, the bit-for-bit checkpoint comparison,
the order families train in) are checked here on CPU. And benchmarks/flops_per_image.py, whose
counts docs/gpu.md's estimate rests on, counts R1's double backward."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.progress import SILENT
from synthetic import TINY_GAN, write_npz

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def gpu_check(benchmarks):
    return benchmarks("gpu_check")


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device is present; nothing to check (--device cpu --quick is a dry run on CPU)"
    ]


def test_the_section_between_the_markers_is_replaced_and_the_rest_kept(gpu_check, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Before\ntext\n")
    gpu_check.write_section(doc, "## First GPU check\n| a |\n")
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\n## Before\ntext\n\n<!-- gpu_check: start -->\n## First GPU check")
    doc.write_text(first + "\n## After\nmore\n")
    gpu_check.write_section(doc, "## First GPU check\n| b |\n")
    second = doc.read_text()
    assert "| a |" not in second and "| b |" in second
    assert second.count(gpu_check.START) == 1 and second.endswith("<!-- gpu_check: end -->\n\n## After\nmore\n")


def test_checkpoints_compare_bit_for_bit(gpu_check, tmp_path):
    weights = {"w": torch.tensor([1.0, 2.0]), "rng": torch.tensor([3], dtype=torch.uint8)}
    for name, w in (("a", weights), ("b", weights), ("c", {**weights, "w": torch.tensor([1.0, 2.0000002])})):
        ckpt.save(tmp_path / name, 5, "gan", {}, w, {})
    assert gpu_check.same_checkpoint(tmp_path / "a", tmp_path / "b")
    assert not gpu_check.same_checkpoint(tmp_path / "a", tmp_path / "c")


def test_a_family_trains_after_the_family_whose_run_it_needs(gpu_check):
    assert gpu_check.in_order(["prior"]) == ["vqvae", "prior"]
    assert gpu_check.in_order(["prior", "gan", "vqvae"]) == ["vqvae", "prior", "gan"]


def test_every_setting_is_checked_on_cuda(gpu_check, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    labels = [(s.label, s.compile) for s in gpu_check.settings("cuda", quick=False)]
    assert labels == [
        ("fp32", False), ("bf16", False), ("fp16", False), ("bf16 + channels_last", False),
        ("bf16 + channels_last", True),
    ]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4 / V100
    assert [s.precision for s in gpu_check.settings("cuda", quick=False)] == ["fp32", "fp16", "fp16", "fp16"]


def test_flops_are_counted_through_r1s_double_backward(benchmarks, tmp_path):
    flops_per_image = benchmarks("flops_per_image").flops_per_image
    spec = families.get("gan")
    data = {"data": {"source": str(write_npz(tmp_path / "d.npz", n=32))}}

    def per_image(*values: str) -> float:
        config = spec.resolve("default", None, [*TINY_GAN, "train.batch_size=8", *values], data)
        return flops_per_image(spec, spec.prepare(config, SILENT), steps=2)

    plain = per_image("optim.r1_gamma=0")
    with_r1 = per_image("optim.r1_gamma=1", "optim.r1_interval=1", "model.d_norm=spectral")
    assert plain > 0 and with_r1 > plain  # R1's gradient of D, and its backward, are counted
