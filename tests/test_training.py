"""The training loop: exact resume, SIGKILL/SIGINT survival, step and time budgets, run folder
contents, and refusing to resume a run with different settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import dump_yaml, resolve
from genforge.errors import GenforgeError
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.training import runs

GAN = families.get("gan")

TINY = [
    "model.z_dim=16",
    "model.g_width=8",
    "model.d_width=8",
    "train.batch_size=8",
    "train.device=cpu",
    "train.grid_images=4",
    "train.log_every=2",
]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 256, (40, 32, 32, 1), dtype=np.uint8))
    return path


def gan_config(data: Path, *sets: str, preset: str = "default") -> GANRunConfig:
    return resolve(GANRunConfig, GAN_PRESETS, preset, None, TINY + list(sets), {"data": {"source": str(data)}})


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# exact resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto is bf16 autocast on AMX CPUs
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, data, precision):
    sets = ["train.steps=12", "train.checkpoint_every=4", f"train.precision={precision}"]
    # wgan-gp with d_steps 2 also exercises the gradient penalty's random interpolation
    for extra in ([], ["optim.loss=wgan-gp", "model.d_norm=none", "optim.d_steps=2"]):
        whole, parts = tmp_path / f"whole{len(extra)}", tmp_path / f"parts{len(extra)}"
        result = runs.train(GAN, gan_config(data, *sets, *extra), whole)
        assert (result.step, result.interrupted) == (12, False)

        first = runs.train(GAN, gan_config(data, *sets, *extra), parts, stop_after=5)
        assert (first.step, first.interrupted) == (5, True)
        assert ckpt.load(parts).step == 5
        second = runs.train(GAN, gan_config(data, *sets, *extra), parts, stop_after=4)
        assert (second.step, second.interrupted) == (9, True)
        third = runs.train(GAN, gan_config(data, *sets, *extra), parts)
        assert (third.step, third.interrupted) == (12, False)

        a, b = ckpt.load(whole), ckpt.load(parts)
        assert a.step == b.step == 12
        assert set(a.tensors) == set(b.tensors)
        assert {k.split(".")[1] for k in a.tensors if k.startswith("model.")} == {"G", "D", "G_ema"}
        for name in a.tensors:  # weights, EMA, optimizer moments and RNG states alike
            assert torch.equal(a.tensors[name], b.tensors[name]), name
        assert metric_steps(parts) == metric_steps(whole) == [2, 4, 6, 8, 10, 12]


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, data):
    """A run killed after logging step 8 but before checkpointing it logs step 8 again, once."""
    sets = ["train.steps=10", "train.checkpoint_every=3"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    runs.train(GAN, gan_config(data, *sets), whole)
    runs.train(GAN, gan_config(data, *sets), parts, stop_after=8)
    root = parts / "checkpoints"
    assert 8 in metric_steps(parts)
    # simulate the kill: the step-8 checkpoint never happened
    for p in root.iterdir():
        if p.name in ("step-0000008", "latest"):
            p.unlink() if p.is_file() else shutil.rmtree(p)
    assert ckpt.find(parts) == root / "step-0000006"
    result = runs.train(GAN, gan_config(data, *sets), parts)
    assert result.step == 10
    assert metric_steps(parts) == [2, 4, 6, 8, 10]
    a, b = ckpt.load(whole), ckpt.load(parts)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name


def test_checkpoints_are_pruned_to_keep(tmp_path, data):
    runs.train(
        GAN,
        gan_config(data, "train.steps=10", "train.checkpoint_every=2", "train.keep_checkpoints=2"),
        tmp_path / "r",
    )
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["latest", "step-0000008", "step-0000010"]


# ---------------------------------------------------------------------------------------------
# budgets and the run folder
# ---------------------------------------------------------------------------------------------


def test_step_budget_and_run_folder(tmp_path, data):
    config = gan_config(data, "train.steps=6", "train.sample_every=2", "train.minutes=30")
    out = tmp_path / "run"
    result = runs.train(GAN, config, out)
    assert (result.step, result.interrupted) == (6, False)
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "final.png",
        "step-0000002.png",
        "step-0000004.png",
        "step-0000006.png",
    ]
    assert (out / "samples" / "final.png").read_bytes() == (out / "samples" / "step-0000006.png").read_bytes()
    assert (out / "config.yaml").read_text() == dump_yaml(config)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["resolution"] == 32 and saved["train"]["steps"] == 6
    assert ckpt.load(out).step == 6
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in records] == [("train", 2), ("train", 4), ("train", 6)]
    assert all(np.isfinite(r["values"]["d_loss"]) and np.isfinite(r["values"]["g_loss"]) for r in records)


def test_minutes_budget_stops_the_run_and_counts_over_resumes(tmp_path, data):
    out = tmp_path / "run"
    config = gan_config(data, "train.minutes=0.005", "train.checkpoint_every=100000")  # 0.3 s, no step limit
    started = time.perf_counter()
    result = runs.train(GAN, config, out)
    assert time.perf_counter() - started < 10
    assert result.step > 0 and not result.interrupted
    c = ckpt.load(out)
    assert c.step == result.step
    assert c.state["elapsed"] >= 0.3
    assert (out / "samples" / "final.png").is_file()
    # the budget is spent: resuming with the same budget trains no further
    again = runs.train(GAN, gan_config(data, "train.minutes=0.005", "train.checkpoint_every=100000"), out)
    assert again.step == result.step


def test_whichever_budget_comes_first(tmp_path, data):
    by_time = runs.train(GAN, gan_config(data, "train.steps=1000000", "train.minutes=0.004"), tmp_path / "a")
    assert 0 < by_time.step < 1000000
    by_steps = runs.train(GAN, gan_config(data, "train.steps=3", "train.minutes=10"), tmp_path / "b")
    assert by_steps.step == 3


def test_more_steps_extend_a_finished_run(tmp_path, data):
    out = tmp_path / "run"
    runs.train(GAN, gan_config(data, "train.steps=4"), out)
    result = runs.train(GAN, gan_config(data, "train.steps=7"), out)  # steps may change
    assert result.step == 7 and ckpt.load(out).step == 7


# ---------------------------------------------------------------------------------------------
# refusing to resume something else
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, key",
    [
        ("model.g_width=16", "model.g_width"),
        ("optim.loss=hinge", "optim.loss"),
        ("train.batch_size=4", "train.batch_size"),
        ("train.seed=5", "train.seed"),
    ],
)
def test_resuming_with_different_settings_is_refused(tmp_path, data, change, key):
    out = tmp_path / "run"
    runs.train(GAN, gan_config(data, "train.steps=2"), out)
    before = snapshot(out)
    with pytest.raises(GenforgeError) as info:
        runs.train(GAN, gan_config(data, "train.steps=4", change), out)
    message = str(info.value)
    assert f"holds a run with {key}=" in message and "new --out folder" in message
    assert snapshot(out) == before


def test_resuming_a_run_of_another_kind_is_refused(tmp_path, data):
    out = tmp_path / "run"
    ckpt.save(out, 3, "prior", {"x": 1}, {"w": torch.zeros(1)}, {})
    before = snapshot(out)
    with pytest.raises(GenforgeError, match="this is a 'prior' checkpoint, expected 'gan'"):
        runs.train(GAN, gan_config(data, "train.steps=2"), out)
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# killed and interrupted processes (real subprocesses)
# ---------------------------------------------------------------------------------------------


def command(data: Path, out: Path, *args: str) -> list[str]:
    sets = [x for s in TINY for x in ("--set", s)]
    return [sys.executable, "-m", "genforge", "train", "gan", "--data", str(data), "--out", str(out), *sets, *args]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training ended before {path} appeared:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def test_sigkill_then_rerun_resumes(tmp_path, data):
    out = tmp_path / "run"
    cmd = command(data, out, "--steps", "400", "--set", "train.checkpoint_every=20", "--set", "train.log_every=10")
    process = start(cmd)
    try:
        wait_for(out / "checkpoints" / "latest", process)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = ckpt.load(out).step
    assert 0 < killed_at < 400, "the run finished before it could be killed; make it longer"

    again = start(cmd)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    resumed = [line for line in stderr.splitlines() if line.startswith("resuming ")]
    assert len(resumed) == 1 and " from step " in resumed[0]
    step = int(resumed[0].split(" from step ")[1].split()[0])
    assert step >= killed_at > 0
    assert ckpt.load(out).step == 400
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000400"
    steps = metric_steps(out)
    assert steps == sorted(set(steps)) and steps[-1] == 400  # no step logged twice
    assert "step 400" in stdout


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, data):
    out = tmp_path / "run"
    process = start(command(data, out, "--steps", "1000000", "--set", "train.checkpoint_every=10"))
    try:
        wait_for(out / "checkpoints" / "latest", process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted ")]
    assert len(lines) == 1 and "signal 2" in lines[0], stderr
    stopped = int(lines[0].split(" at step ")[1].split(";")[0])
    assert stopped >= 10
    assert ckpt.load(out).step == stopped
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{stopped:07d}"
    assert (out / "samples" / "final.png").is_file()
    assert "Traceback" not in stderr
