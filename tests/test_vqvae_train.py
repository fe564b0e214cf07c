"""`genforge train vqvae` end to end on synthetic data: the loss falls, codebook health is logged,
the run folder fills, reconstruct/encode work, presets train, and a resumed run is bit-identical."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import resolve
from genforge.data import load_dataset
from genforge.families.vqvae import VQVAE_PRESETS, VQVAERunConfig
from genforge.training import runs
from synthetic import COMMON, TINY_VQVAE, cli, is_png, one_error, records, train, write_idx_folder, write_npz

VQVAE = families.get("vqvae")


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("data") / "bars")


@pytest.fixture(scope="module")
def vq_run(idx_data, tmp_path_factory):
    """30 steps on data with a test split (reconstruct and encode default to it)."""
    out = tmp_path_factory.mktemp("runs") / "vq"
    train("vqvae", out, data=idx_data, steps=30)
    return out


def test_loss_falls_and_codebook_health_is_logged(vq_run):
    assert [r["step"] for r in records(vq_run, "train")] == [5, 10, 15, 20, 25, 30]
    logs = [r["values"] for r in records(vq_run, "train")]
    assert all(math.isfinite(r["loss"]) for r in logs)
    assert logs[-1]["loss"] < 0.8 * logs[0]["loss"], [r["loss"] for r in logs]
    for r in logs:
        assert 0 < r["codebook_usage"] <= 1
        assert 1 <= r["codebook_perplexity"] <= 16
        assert 0 <= r["dead_codes"] <= 16


def test_run_folder_holds_checkpoint_config_and_grids(vq_run):
    c = ckpt.load(vq_run)
    assert (c.kind, c.step) == ("vqvae", 30)
    assert (vq_run / "config.yaml").is_file()
    assert any(k.startswith("model.vqvae.quantizer.") for k in c.tensors)
    assert is_png(vq_run / "samples" / "final.png")
    assert is_png(vq_run / "samples" / "step-0000030.png")


def test_reconstruct_writes_a_png_and_prints_psnr(vq_run, tmp_path):
    code, out, err = cli("reconstruct", vq_run, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 0, err
    assert is_png(tmp_path / "x.png")
    scores = dict(part.split() for part in out.strip().rsplit("; ", 1)[1].split(", "))
    assert set(scores) == {"mse", "psnr", "ssim"}
    psnr = float(scores["psnr"])
    assert 5 < psnr < 100


def test_encode_gives_code_grids_in_range_with_labels(vq_run, idx_data, tmp_path):
    code, out, err = cli("encode", vq_run, "--out", tmp_path / "c.npz", "--device", "cpu")
    assert code == 0, err
    test = load_dataset(str(idx_data), split="test")
    with np.load(tmp_path / "c.npz") as f:
        codes, labels = f["codes"], f["labels"]
        assert list(f["grid"]) == [7, 7] and int(f["num_codes"]) == 16  # 28 px, downsample 4
    assert codes.shape == (len(test), 7, 7)
    assert codes.min() >= 0 and codes.max() < 16
    np.testing.assert_array_equal(labels, test.labels)
    assert f"wrote {len(test)} code grids of 7x7" in out


def test_encode_out_must_be_npz(vq_run, tmp_path):
    code, out, err = cli("encode", vq_run, "--out", tmp_path / "c.txt", "--device", "cpu")
    assert code == 2
    assert one_error(err).startswith("genforge: error: the output of encode must end in .npz")
    assert not (tmp_path / "c.txt").exists()


def _config(data, *extra):
    sets = (
        COMMON
        + TINY_VQVAE
        + ["train.device=cpu", "train.steps=12", "train.checkpoint_every=4", "train.log_every=2", *extra]
    )
    return resolve(VQVAERunConfig, VQVAE_PRESETS, "default", None, sets, {"data": {"source": str(data)}})


def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    data = write_npz(tmp_path / "d.npz", n=96)
    # restart_after=3 makes dead-code restarts (random draws) happen inside the run
    extra = ["model.quantizer.restart_after=3"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert runs.train(VQVAE, _config(data, *extra), whole).step == 12
    first = runs.train(VQVAE, _config(data, *extra), parts, stop_after=5)
    assert (first.step, first.interrupted) == (5, True)
    second = runs.train(VQVAE, _config(data, *extra), parts, stop_after=3)
    assert (second.step, second.interrupted) == (8, True)
    third = runs.train(VQVAE, _config(data, *extra), parts)
    assert (third.step, third.interrupted) == (12, False)

    a, b = ckpt.load(whole), ckpt.load(parts)
    assert a.step == b.step == 12 and set(a.tensors) == set(b.tensors)
    buffers = {"codebook", "cluster_size", "embed_sum", "initialised", "steps", "last_used"}
    assert buffers <= {k.rsplit(".", 1)[1] for k in a.tensors if k.startswith("model.vqvae.quantizer.")}
    for name in a.tensors:  # weights, quantizer buffers, optimizer moments, RNG, codebook-health counts
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.state["extra"] == b.state["extra"]
    assert [r["step"] for r in records(parts)] == [r["step"] for r in records(whole)] == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("preset", ["plain-vq", "fsq"])
def test_presets_train(preset, tmp_path):
    data = write_npz(tmp_path / "d.npz", n=64)
    out = train("vqvae", tmp_path / preset, data=data, steps=5, options=["--preset", preset])
    c = ckpt.load(out)
    assert c.step == 5 and c.config["model"]["quantizer"]["method"] == ("fsq" if preset == "fsq" else "vq")
    logs = [r["values"] for r in records(out, "train")]
    assert logs and all(math.isfinite(r["loss"]) for r in logs)


def test_a_run_from_before_the_perceptual_and_schedule_options_resumes(tmp_path):
    data = write_npz(tmp_path / "d.npz", n=64)
    out = train("vqvae", tmp_path / "old", data=data, steps=3)
    for meta in out.glob("checkpoints/step-*/meta.json"):
        values = json.loads(meta.read_text())
        for name in ("perceptual_weight", "perceptual_net", "lr_schedule", "lr_final_ratio", "warmup_steps"):
            del values["config"]["optim"][name]
        meta.write_text(json.dumps(values))
    assert ckpt.load(train("vqvae", out, data=data, steps=5)).step == 5
