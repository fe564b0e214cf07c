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
from genforge.config import TrainConfig, from_dict
from genforge.families.prior import PriorRunConfig, PriorTrainer
from genforge.families.vqvae import VQVAERunConfig, VQVAETrainer
from genforge.models.vqvae import VQVAE, VQVAEConfig
from genforge.progress import SILENT, Reporter
from genforge.training import devices, precision, probe, runs
from genforge.training.probe import Choice, candidates, choose
from synthetic import TINY_GAN, cli, sets, write_npz

CPU = torch.device("cpu")
MEASURE_SLOWDOWN = probe.kernel_slowdown  # the real one, before any test patches it


class SlowWhereTold:
    """A trainer whose step takes as long as the table says for its (precision, layout); it counts
    its steps as a real trainer does (the R1 schedule hangs on that count)."""

    seconds = {("fp32", False): 0.02, ("fp32", True): 0.015, ("bf16", False): 0.01, ("bf16", True): 0.005}
    first_step: dict = {}  # (precision, layout) -> seconds of that candidate's first step, when it differs
    steps_seen: dict = {}  # (precision, layout) -> the step counter at each of its calls
    batches_per_step = 1  # as training.api.Trainer's default

    def __init__(self, config, dtype):
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
        self.key = (name, bool(config.train.channels_last))
        self.steps_done = 0
        self.steps_seen[self.key] = []

    def train_step(self, x, y):
        self.steps_seen[self.key].append(self.steps_done)
        first = self.first_step.get(self.key) if self.steps_done == 0 else None
        time.sleep(self.seconds[self.key] if first is None else first)
        self.steps_done += 1
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
    monkeypatch.setattr(probe, "kernel_slowdown", lambda device, dtype: 1.0)
    monkeypatch.setattr(SlowWhereTold, "first_step", {})
    monkeypatch.setattr(SlowWhereTold, "steps_seen", {})


def test_candidates_are_what_the_config_leaves_open():
    assert candidates(TrainConfig(), CPU) == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert candidates(TrainConfig(precision="fp32"), CPU) == [("fp32", False), ("fp32", True)]
    assert candidates(TrainConfig(precision="bf16", channels_last=False), CPU) == [("bf16", False)]
    assert candidates(TrainConfig(channels_last=True), CPU) == [("fp32", True), ("bf16", True)]


def test_the_probe_picks_the_fastest_and_caches_it_with_its_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    calls: list = []
    choice = choose(fake_spec(calls), prepared(), CPU, batch, reporter=Reporter())
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

    with monkeypatch.context() as patched:  # runs.py's own name: patching probe.choose would not reach it
        patched.setattr(runs, "choose", lambda *a, **k: pytest.fail("a resumed run measured again"))
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
        prep = spec.prepare(config, SILENT)
        for dtype in (torch.float32, torch.bfloat16):
            prep.config.train.channels_last = True
            trainer = spec.build(prep, CPU, dtype)
            x = torch.rand(8, 1, 32, 32).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
            losses = trainer.train_step(x, None)
            assert all(torch.isfinite(v).all() for v in losses.values())


def test_a_candidate_stops_being_timed_once_it_cannot_win(tmp_path, monkeypatch):
    """After its warm-up, a candidate already slower than the best's whole measurement is not timed
    further, and the cache records it as ruled out, not as an extrapolated speed."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    monkeypatch.setitem(SlowWhereTold.seconds, ("bf16", False), 0.4)
    monkeypatch.setitem(SlowWhereTold.seconds, ("bf16", True), 0.4)
    choice = choose(fake_spec([]), prepared(), CPU, batch)
    assert choice.precision == "fp32"
    planned = choice.table[0]["steps"]
    assert planned >= probe.MIN_STEPS
    for key in (("bf16", False), ("bf16", True)):  # warm-up, then one timed step: 0.4 s > fp32's whole timing
        assert SlowWhereTold.steps_seen[key] == list(range(probe.WARMUP_STEPS + 1))
    ruled = {row["setting"]: row for row in choice.table if row["images_per_s"] is None}
    assert set(ruled) == {"bf16", "bf16 + channels_last"}
    assert ruled["bf16"]["ruled_out"] == f"slower than fp32 + channels_last after 1 of {planned} steps"
    assert json.loads(choice.cache.read_text())["table"] == choice.table
    assert f"bf16 ruled out (slower than fp32 + channels_last after 1 of {planned} steps)" in choice.describe()


def test_a_slow_first_step_does_not_rule_out_the_fastest_candidate(tmp_path, monkeypatch):
    """First steps carry compile, kernel set-up, k-means init and step 0's R1: a candidate whose
    first step is 25x its later ones, and whose later ones are the fastest, wins."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    monkeypatch.setitem(SlowWhereTold.first_step, ("bf16", True), 0.5)
    choice = choose(fake_spec([]), prepared(), CPU, batch)
    assert (choice.precision, choice.channels_last) == ("bf16", True)
    assert all(row["images_per_s"] is not None for row in choice.table)


def test_every_candidate_times_the_same_steps_of_the_schedule(tmp_path, monkeypatch):
    """Same warm-up, same number of timed steps, one batch: every 4th step being slow (as R1 is
    every r1_interval steps) weighs on every candidate alike."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    batches_given = []

    class Regularised(SlowWhereTold):
        def train_step(self, x, y):
            batches_given.append((self.key, x))
            if self.steps_done % 4 == 0:
                time.sleep(0.01)
            return super().train_step(x, y)

    spec = SimpleNamespace(name="regularised", build=lambda p, d, dtype: Regularised(p.config, dtype))
    choice = choose(spec, prepared(), CPU, batch)
    planned = choice.table[0]["steps"]
    assert [row["steps"] for row in choice.table] == [planned] * 4
    assert all(seen == list(range(probe.WARMUP_STEPS + planned)) for seen in SlowWhereTold.steps_seen.values())
    first = {}
    assert all(given is first.setdefault(key, given) for key, given in batches_given)  # one batch per candidate


def test_a_cache_written_by_the_old_probe_is_measured_anew(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    first = choose(fake_spec([]), prepared(), CPU, batch)
    entry = json.loads(first.cache.read_text())
    first.cache.write_text(json.dumps({**entry, "version": 1}))  # version 1 stored extrapolated screens
    calls: list = []
    again = choose(fake_spec(calls), prepared(), CPU, batch)
    assert again.how == "probe" and len(calls) == 4


def test_cuda_candidates_include_fp16_and_bf16_only_where_supported(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4 / V100
    assert candidates(TrainConfig(channels_last=False), cuda) == [("fp32", False), ("fp16", False)]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # an A100 / H100
    assert [p for p, _ in candidates(TrainConfig(channels_last=False), cuda)] == ["fp32", "bf16", "fp16"]
    mps = torch.device("mps")
    assert candidates(TrainConfig(channels_last=False), mps) == [("fp32", False)]


def test_timings_on_mps_wait_for_the_device(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    devices._sync(torch.device("mps"))
    devices._sync(CPU)
    assert waited == ["mps"]


def test_emulated_arithmetic_is_ruled_out_by_a_matmul_screen(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "kernel_slowdown", lambda device, dtype: 1.0 if dtype == torch.float32 else 50.0)
    calls: list = []
    choice = choose(fake_spec(calls), prepared(), CPU, batch)
    assert choice.precision == "fp32" and calls == [torch.float32, torch.float32]  # bf16 never built
    ruled = [row for row in choice.table if row["images_per_s"] is None]
    assert [row["setting"] for row in ruled] == ["bf16", "bf16 + channels_last"]
    assert "bf16 ruled out (matmul 50x slower)" in choice.describe()


def test_kernel_slowdown_measures_this_machine():
    assert MEASURE_SLOWDOWN(CPU, torch.float32) == 1.0
    assert MEASURE_SLOWDOWN(CPU, torch.bfloat16) > 0


def test_vqvae_and_prior_train_fp16_with_a_grad_scaler_and_resume_its_state():
    """fp16 is a candidate on CUDA for every family: each scales its losses (autocast fp16 runs on
    CPU too, which is where this test runs it)."""
    half = torch.float16
    vq_cfg = from_dict(VQVAERunConfig, {"model": {"channels": 1, "resolution": 8, "width": 4, "latent_dim": 4}})
    vq_cfg.model.quantizer.kmeans_init = False
    prior_cfg = from_dict(PriorRunConfig, {"model": {"vocab_size": 16, "grid_h": 2, "grid_w": 2}})
    prior_cfg.model.n_layer, prior_cfg.model.n_embd, prior_cfg.model.n_head = 1, 8, 2
    prior_cfg.optim.grad_clip = 1.0
    x = torch.rand(4, 1, 8, 8).mul(2).sub(1)
    codes = torch.randint(0, 16, (4, 2, 2))

    def build(which, dtype):
        if which == "vqvae":
            return VQVAETrainer(vq_cfg, CPU, dtype), x
        vqvae = VQVAE(VQVAEConfig(channels=1, resolution=8, width=4, latent_dim=4))
        return PriorTrainer(prior_cfg, vqvae, {}, CPU, dtype), codes

    for which in ("vqvae", "prior"):
        assert build(which, torch.float32)[0].scaler is None  # fp32 and bf16 need none
        trainer, batch = build(which, half)
        assert trainer.scaler is not None
        before = [p.detach().clone() for p in trainer.opt.param_groups[0]["params"]]
        for _ in range(3):
            losses = trainer.train_step(batch, None)
        assert torch.isfinite(losses["loss"])
        assert trainer.scaler.state_dict()["_growth_tracker"] == 3  # three updates went through the scaler
        moved = [p for p, b in zip(trainer.opt.param_groups[0]["params"], before) if not torch.equal(p, b)]
        assert moved, which
        tensors, state = trainer.extra_state()
        again, _ = build(which, half)
        again.load_extra_state(tensors, json.loads(json.dumps(state)))
        assert again.scaler.state_dict() == trainer.scaler.state_dict()


def test_update_unscales_before_clipping():
    """With a scaler, clipping sees the true gradients, not the scaled ones."""
    weight = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([weight], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    precision.update(opt, scaler, (weight * torch.tensor([3.0, 0.0, 4.0])).sum(), ([weight], 1.0))
    # gradient (3, 0, 4), norm 5, clipped to norm 1: the step is (0.6, 0, 0.8), whatever the scale
    assert torch.allclose(weight.detach(), torch.tensor([0.4, 1.0, 0.2]))


def test_under_compile_each_candidate_compiles_afresh(tmp_path, monkeypatch):
    """Compiled graphs of one candidate are not reused by the next: each pays its own compile in
    its warm-up, as the real run will."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    resets = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: resets.append(True))
    choose(fake_spec([]), prepared(compile=True), CPU, batch)
    assert len(resets) == 4
    resets.clear()
    choose(fake_spec([]), prepared(batch_size=16), CPU, batch)
    assert resets == []
