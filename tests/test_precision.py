"""Precision chosen by measurement: the probe times the family's own step under each candidate,
picks the fastest, caches the choice per machine with its numbers, prints it, and a resumed run
keeps the precision it started with."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import TrainConfig
from genforge.training import precision
from genforge.training.precision import Choice, candidates, choose
from synthetic import TINY_GAN, cli, sets, write_npz

CPU = torch.device("cpu")
MEASURE_SLOWDOWN = precision.kernel_slowdown  # the real one, before any test patches it


class SlowWhereTold:
    """A trainer whose step takes as long as the table says for its (precision, layout)."""

    seconds = {("fp32", False): 0.02, ("fp32", True): 0.015, ("bf16", False): 0.01, ("bf16", True): 0.005}

    def __init__(self, config, dtype):
        self.key = ("bf16" if dtype == torch.bfloat16 else "fp32", bool(config.train.channels_last))

    def train_step(self, x, y):
        time.sleep(self.seconds[self.key])
        return {}


def fake_spec(calls: list) -> SimpleNamespace:
    def build(prepared, device, dtype):
        calls.append(dtype)
        return SlowWhereTold(prepared.config, dtype)

    return SimpleNamespace(name="fake", build=build)


@dataclass
class FakeModel:
    width: int = 8


@dataclass
class FakeRunConfig:
    model: FakeModel = field(default_factory=FakeModel)
    train: TrainConfig = field(default_factory=TrainConfig)


def prepared(**train) -> SimpleNamespace:
    values = {"batch_size": 8, "probe_seconds": 0.05, **train}
    return SimpleNamespace(config=FakeRunConfig(train=TrainConfig(**values)))


def batch(per_step: int = 1):
    return torch.zeros(8 * per_step, 1, 4, 4), None


@pytest.fixture(autouse=True)
def arithmetic_at_par(monkeypatch):
    """The fake trainers' timings decide, whatever this CPU's bf16 matmul speed."""
    monkeypatch.setattr(precision, "kernel_slowdown", lambda device, dtype: 1.0)


def test_candidates_are_what_the_config_leaves_open():
    assert candidates(TrainConfig(), CPU) == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert candidates(TrainConfig(precision="fp32"), CPU) == [("fp32", False), ("fp32", True)]
    assert candidates(TrainConfig(precision="bf16", channels_last=False), CPU) == [("bf16", False)]
    assert candidates(TrainConfig(channels_last=True), CPU) == [("fp32", True), ("bf16", True)]


def test_the_probe_picks_the_fastest_and_caches_it_with_its_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    calls: list = []
    choice = choose(fake_spec(calls), prepared(), CPU, batch)
    assert (choice.precision, choice.channels_last, choice.how) == ("bf16", True, "probe")
    assert len(calls) == 4 and len(choice.table) == 4
    speeds = {row["setting"]: row["images_per_s"] for row in choice.table}
    assert speeds["bf16 + channels_last"] > speeds["bf16"] > speeds["fp32 + channels_last"] > speeds["fp32"]
    assert "measuring the fastest precision" in capsys.readouterr().err
    saved = json.loads(choice.cache.read_text())
    assert saved["table"] == choice.table and "machine" in saved["key"]

    calls.clear()
    again = choose(fake_spec(calls), prepared(), CPU, batch)
    assert (again.precision, again.channels_last, again.how) == ("bf16", True, "cache") and calls == []
    assert "bf16 + channels_last" in again.describe() and "img/s" in again.describe()

    other = choose(fake_spec(calls), prepared(batch_size=16), CPU, batch)  # another model/batch: measured anew
    assert other.how == "probe" and calls


def test_a_set_precision_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    calls: list = []
    choice = choose(fake_spec(calls), prepared(precision="fp32", channels_last=False), CPU, batch)
    assert (choice.precision, choice.channels_last, choice.how, calls) == ("fp32", False, "set", [])


def test_the_probe_leaves_the_random_state_as_it_found_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    before = torch.get_rng_state()

    class Draws(SlowWhereTold):
        def train_step(self, x, y):
            torch.rand(3)
            return {}

    spec = SimpleNamespace(name="draws", build=lambda p, d, dtype: Draws(p.config, dtype))
    choose(spec, prepared(), CPU, batch)
    assert torch.equal(torch.get_rng_state(), before)


def test_training_prints_the_choice_stores_it_and_a_resume_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    data = write_npz(tmp_path / "d.npz", n=32)
    run = tmp_path / "run"
    base = ["train", "gan", "--data", data, "--out", run, "--device", "cpu"]
    values = sets(TINY_GAN, ["train.batch_size=8", "train.probe_seconds=0.05", "train.sample_every=0"])
    code, _, err = cli(*base, "--steps", 2, *values)
    assert code == 0, err
    assert "training gan on cpu, precision" in err and "(probe:" in err
    first = ckpt.load(run).state["precision"]
    assert first["precision"] in ("fp32", "bf16") and isinstance(first["channels_last"], bool)

    monkeypatch.setattr(precision, "choose", lambda *a, **k: pytest.fail("a resumed run measured again"))
    code, _, err = cli(*base, "--steps", 4, *values)
    assert code == 0, err
    assert "(resumed)" in err and ckpt.load(run).state["precision"] == first

    code, _, err = cli(*base[:-2], "--out", tmp_path / "fixed", "--device", "cpu", "--steps", 1, "--precision", "fp32",
                       *values, "--set", "train.channels_last=false")  # fmt: skip
    assert code == 0 and "precision fp32 (set)" in err, err


def test_choice_describes_itself():
    assert Choice("fp32", False, "set").describe() == "precision fp32 (set)"
    assert Choice("bf16", True, "probe", [{"setting": "bf16", "images_per_s": 10.0}]).dtype == torch.bfloat16


def test_every_family_builds_under_every_candidate(tmp_path):
    """The probe builds a throwaway trainer per candidate: each family's build takes both dtypes."""
    data = write_npz(tmp_path / "d.npz", n=16)
    for name, values in (("gan", TINY_GAN), ("vqvae", ["model.width=8", "model.latent_dim=8"])):
        spec = families.get(name)
        config = spec.resolve("default", None, [*values, "train.batch_size=8"], {"data": {"source": str(data)}})
        prep = spec.prepare(config, False)
        for dtype in (torch.float32, torch.bfloat16):
            prep.config.train.channels_last = True
            trainer = spec.build(prep, CPU, dtype)
            x = torch.rand(8, 1, 32, 32).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
            losses = trainer.train_step(x, None)
            assert all(torch.isfinite(v).all() for v in losses.values())


def test_a_hopeless_candidate_is_ruled_out_without_timing_it_in_full(tmp_path, monkeypatch):
    """bf16 without hardware support is emulated, 30-100x slower: one screening step suffices."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    monkeypatch.setitem(SlowWhereTold.seconds, ("bf16", False), 0.4)
    monkeypatch.setitem(SlowWhereTold.seconds, ("bf16", True), 0.4)
    calls: list = []
    started = time.perf_counter()
    choice = choose(fake_spec(calls), prepared(), CPU, batch)
    assert choice.precision == "fp32"
    assert time.perf_counter() - started < 0.4 * 2 * 2  # each bf16 candidate: one step, not five


def test_emulated_arithmetic_is_ruled_out_by_a_matmul_screen(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "kernel_slowdown", lambda device, dtype: 1.0 if dtype == torch.float32 else 50.0)
    calls: list = []
    choice = choose(fake_spec(calls), prepared(), CPU, batch)
    assert choice.precision == "fp32" and calls == [torch.float32, torch.float32]  # bf16 never built
    ruled = [row for row in choice.table if row["images_per_s"] is None]
    assert [row["setting"] for row in ruled] == ["bf16", "bf16 + channels_last"]
    assert "bf16 ruled out (matmul 50x slower)" in choice.describe()


def test_kernel_slowdown_measures_this_machine():
    assert MEASURE_SLOWDOWN(CPU, torch.float32) == 1.0
    assert MEASURE_SLOWDOWN(CPU, torch.bfloat16) > 0
