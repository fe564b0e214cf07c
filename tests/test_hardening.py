"""Hardening: the audit's correctness fixes (each would fail on genforge 0.1) and the failure
classes of a hostile test set: operating-system errors, run folders read outside themselves,
incomplete checkpoints, non-finite values, divergence, two writers, a full disk, kill -9."""

from __future__ import annotations

import errno
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import from_dict, resolve
from genforge.errors import GenforgeError
from genforge.families.gan import fit_to_data
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer
from genforge.families.prior import PriorRunConfig, PriorTrainer
from genforge.families.vqvae import code_dtype, encode_images
from genforge.models.gan import DCGANConfig, Discriminator
from genforge.models.quantizers import QuantizerConfig
from genforge.models.vqvae import VQVAE, VQVAEConfig
from genforge.report import collect, metric_table, verdicts
from genforge.runfolder import RunLock, read_records
from genforge.training.batches import Batches
from synthetic import COMMON, TINY_GAN, cli, error_line, one_error, records, sets, write_npz

GAN = families.get("gan")
FLAGS = ["--device", "cpu", "--quiet", *sets(COMMON, TINY_GAN)]


def tiny_gan(*values: str, dtype=torch.float32) -> GANTrainer:
    base = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.precision=fp32"]
    cfg = resolve(GANRunConfig, GAN_PRESETS, None, None, base + list(values))
    return GANTrainer(fit_to_data(cfg, 32, 1), torch.device("cpu"), dtype)


def batches(n: int = 64, per_step: int = 1) -> Batches:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    return Batches(torch.from_numpy(images), None, batch_size=8, seed=0, per_step=per_step)


@pytest.fixture
def data(tmp_path) -> Path:
    return write_npz(tmp_path / "d.npz", n=64)


def train_cli(data: Path, out: Path, *extra) -> tuple[int, str, str]:
    return cli("train", "gan", "--data", data, "--out", out, *FLAGS, *extra)


# ---------------------------------------------------------------------------------------------
# B. correctness
# ---------------------------------------------------------------------------------------------


def test_code_indices_beyond_int16_keep_their_values(monkeypatch):
    """FSQ levels 8,8,8,5,5,5 make 64,000 codes: int16 would wrap them negative."""
    assert code_dtype(64_000) == np.int32 and code_dtype(512) == np.int16 and code_dtype(32_768) == np.int16
    q = QuantizerConfig(method="fsq", fsq_levels=(8, 8, 8, 5, 5, 5))
    vqvae = VQVAE(VQVAEConfig(channels=1, resolution=8, width=4, latent_dim=6, downsample=2, quantizer=q))
    assert vqvae.num_codes == 64_000
    high = torch.full((2, 4, 4), 63_999, dtype=torch.long)
    monkeypatch.setattr(vqvae, "encode_indices", lambda x: high[: len(x)])
    codes = encode_images(vqvae, np.zeros((2, 8, 8, 1), np.uint8), torch.device("cpu"))
    assert codes.dtype == np.int32 and int(codes.max()) == 63_999
    # and a prior over such a codebook trains on them
    prior_cfg = from_dict(PriorRunConfig, {"model": {"vocab_size": 64_000, "grid_h": 4, "grid_w": 4}})
    prior_cfg.model.n_layer, prior_cfg.model.n_embd, prior_cfg.model.n_head = 1, 8, 2
    trainer = PriorTrainer(prior_cfg, vqvae, {}, torch.device("cpu"))
    losses = trainer.train_step(torch.from_numpy(codes.astype(np.int64)), None)
    assert torch.isfinite(losses["loss"])


@pytest.mark.parametrize(
    "penalty", [["optim.r1_gamma=1", "model.d_norm=spectral"], ["optim.loss=wgan-gp", "model.d_norm=none"]]
)
def test_compiled_discriminator_with_a_gradient_penalty_trains(monkeypatch, penalty):
    """A compiled module cannot double-backward: the penalties run through the eager D."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="aot_eager"))  # quick to compile
    trainer = tiny_gan("train.compile=true", *penalty)
    assert trainer.step_d is not trainer.D  # the plain losses do go through the compiled D
    losses = trainer.train_step(*batches().get(0))
    assert torch.isfinite(losses["d_loss"]) and ("r1" in losses or "gp" in losses)


def test_fp16_trains_with_a_grad_scaler_and_resumes_its_state():
    trainer = tiny_gan(dtype=torch.float16)
    assert trainer.scaler_g is not None and trainer.scaler_d is not None
    assert tiny_gan().scaler_g is None  # fp32 and bf16 need none
    for step in range(3):
        losses = trainer.train_step(*batches().get(step))
    assert torch.isfinite(losses["g_loss"])
    tensors, state = trainer.extra_state()
    assert state["scaler_g"]["scale"] == trainer.scaler_g.get_scale()
    again = tiny_gan(dtype=torch.float16)
    again.load_extra_state(tensors, json.loads(json.dumps(state)))
    assert again.scaler_d.state_dict() == trainer.scaler_d.state_dict()


def test_each_critic_step_sees_its_own_real_batch():
    trainer = tiny_gan("optim.loss=wgan-gp", "model.d_norm=none", "optim.d_steps=3")
    assert trainer.batches_per_step == 3
    data = batches(per_step=3)
    seen = []
    eager = trainer.step_d

    def spy(x, y=None):
        seen.append(x.detach().clone())
        return eager(x, y)

    trainer.step_d = spy
    real, _ = data.get(0)
    assert real.shape[0] == 3 * 8
    trainer.train_step(real, None)
    reals = seen[0:6:2]  # each critic step: D(real), then D(fake)
    assert all(torch.equal(r, real[i * 8 : (i + 1) * 8]) for i, r in enumerate(reals))
    assert not torch.equal(reals[0], reals[1]) and not torch.equal(reals[1], reals[2])
    index = [set(data.indices(k).tolist()) for k in range(3)]
    assert not (index[0] & index[1]) and not (index[1] & index[2])


def test_r1_with_a_batch_norm_discriminator_is_refused():
    with pytest.raises(GenforgeError, match="r1_gamma needs a discriminator without batch norm"):
        resolve(GANRunConfig, GAN_PRESETS, "default", None, ["optim.r1_gamma=1"])
    resolve(GANRunConfig, GAN_PRESETS, "default", None, ["optim.r1_gamma=1", "model.d_norm=spectral"])


def test_the_classifier_score_is_not_called_inception_score(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        json.dumps({"type": "evaluation", "step": 1, "values": {"features": "classifier", "is": 3.2, "fd": 1.0}}) + "\n"
    )
    rows = {row["key"]: row for row in metric_table([collect(run)])}
    assert rows["is"]["metric"] == "classifier score (IS formula)"
    assert not any("Inception score" in row["metric"] for row in rows.values())


def test_prior_losses_are_named_for_what_they_are_and_not_ranked(tmp_path):
    summaries = []
    for name, values in (("ar", {"code_nll": 2.0, "code_bits_per_dim": 0.2}), ("mg", {"masked_code_ce": 1.0})):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"type": "eval", "step": 5, "values": values}) + "\n")
        summaries.append(collect(run))
    rows = {row["key"]: row for row in metric_table(summaries)}
    assert "not a likelihood" in rows["masked_code_ce"]["metric"]
    assert "not a pixel likelihood" in rows["code_bits_per_dim"]["metric"]
    assert all(rows[k]["better"] is None for k in ("code_nll", "code_bits_per_dim", "masked_code_ce"))
    assert not [v for v in verdicts(summaries) if "prior" in v or "MaskGIT" in v]


def test_spectral_norm_starts_from_the_initialised_weights():
    """Its power-iteration vectors must estimate the weights the network trains from."""
    torch.manual_seed(0)
    config = DCGANConfig(z_dim=8, g_width=8, d_width=8, d_norm="spectral", resolution=32, channels=1, num_classes=10)
    D = Discriminator(config)
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Embedding))]
    assert len(layers) == 5  # four convolutions and the projection's class embedding
    for layer in layers:
        p = layer.parametrizations.weight
        w = p.original.detach().flatten(1)
        u, v = p[0]._u, p[0]._v
        estimate = float(u @ w @ v)
        assert estimate == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=0.05)


# ---------------------------------------------------------------------------------------------
# C. failure classes: one `genforge: error:` line, exit 2, nothing lost
# ---------------------------------------------------------------------------------------------


def test_operating_system_errors_are_one_line(data, tmp_path, monkeypatch):
    from genforge import runfolder

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "config.yaml"))

    monkeypatch.setattr(runfolder.os, "replace", refuse)
    code, _, err = train_cli(data, tmp_path / "run", "--steps", 2)
    assert code == 2 and "Permission denied" in one_error(err)


def test_a_folder_where_a_file_belongs_is_one_line(data, tmp_path):
    (tmp_path / "grid.png").mkdir()
    code, _, err = cli("data", "info", data, "--grid", tmp_path / "grid.png")
    assert code == 2 and "is a folder" in error_line(err)


@pytest.mark.parametrize("target", ["../../elsewhere/step-0000001", "/etc", "step-0000002/../../..", "../escape"])
def test_the_latest_pointer_never_leads_out_of_the_run(tmp_path, target):
    run = tmp_path / "run"
    ckpt.save(run, 1, "gan", {}, {"w": torch.zeros(1)}, {})
    outside = tmp_path / "elsewhere" / "step-0000001"
    ckpt.save(tmp_path / "elsewhere" / "..", 1, "gan", {}, {"w": torch.ones(1)}, {})  # a decoy checkpoint
    outside.parent.mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "latest").write_text(target)
    with pytest.raises(GenforgeError, match="not a checkpoint folder"):
        ckpt.find(run)


def test_a_checkpoints_folder_linked_outside_the_run_is_refused(tmp_path):
    ckpt.save(tmp_path / "other", 1, "gan", {}, {"w": torch.zeros(1)}, {})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "other" / "checkpoints")
    with pytest.raises(GenforgeError, match="outside the run folder"):
        ckpt.find(tmp_path / "run")


@pytest.mark.parametrize("missing", ["tensor", "optimizer entry", "state entry"])
def test_an_incomplete_checkpoint_is_named_before_anything_is_restored(data, tmp_path, missing):
    run = tmp_path / "run"
    code, _, err = train_cli(data, run, "--steps", 2)
    assert code == 0, err
    folder = ckpt.find(run)
    tensors = load_file(str(folder / ckpt.TENSORS))
    meta = json.loads((folder / ckpt.META).read_text())
    if missing == "tensor":
        del tensors["model.G.net.0.weight"]
        expected = "tensor 'model.G.net.0.weight' is missing"
    elif missing == "optimizer entry":
        del tensors[next(k for k in tensors if k.startswith("optim.D.state.0.exp_avg_sq"))]
        expected = "optimizer 'D' entry 0.exp_avg_sq is missing"
    else:
        del meta["state"]["extra"]["steps_done"]
        expected = "state entry 'extra.steps_done' is missing"
    save_file(tensors, str(folder / ckpt.TENSORS))
    (folder / ckpt.META).write_text(json.dumps(meta))
    code, _, err = train_cli(data, run, "--steps", 4)
    assert code == 2 and expected in error_line(err), err


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "inf"])
def test_non_finite_config_values_are_refused(data, tmp_path, value):
    code, _, err = train_cli(data, tmp_path / "run", "--steps", 2, "--set", f"optim.lr_g={value}")
    assert code == 2 and "optim.lr_g must be" in one_error(err)
    assert not (tmp_path / "run").exists()


def test_divergence_stops_the_run_without_a_broken_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    code, _, err = train_cli(
        data, run, "--steps", 40, "--set", "optim.lr_d=1e12", "--set", "optim.lr_g=1e12",
        "--set", "train.checkpoint_every=2", "--set", "train.log_every=2", "--set", "train.sample_every=1",
    )  # fmt: skip
    assert code == 2 and "training diverged" in error_line(err), err
    found = ckpt.find(run)
    if found is not None:  # what was checkpointed before the divergence is finite
        c = ckpt.load(run)
        assert all(torch.isfinite(t).all() for k, t in c.tensors.items() if t.is_floating_point()), c.step
    assert all(np.isfinite(v) for r in read_records(run) for v in r["values"].values() if isinstance(v, float))


def test_a_saturating_discriminator_is_warned_about():
    trainer = tiny_gan()
    assert trainer.watch({"d_loss": 0.6, "g_loss": 0.9}) is None
    assert "saturating" in trainer.watch({"d_loss": 0.0, "g_loss": 1500.0})


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(data, tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        code, _, err = train_cli(data, run, "--steps", 2)
        assert code == 2 and "another genforge process is training into this folder" in one_error(err)
    code, _, err = train_cli(data, run, "--steps", 2)  # the lock went with its holder
    assert code == 0, err


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert train_cli(data, run, "--steps", 2)[0] == 0

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    code, _, err = train_cli(data, run, "--steps", 4)
    assert code == 2 and "No space left on device" in error_line(err) and "step-0000002 is intact" in error_line(err)
    assert ckpt.load(run).step == 2
    assert not list((run / "checkpoints").glob(".tmp*"))


def test_leftovers_of_a_kill_are_cleaned_and_steps_never_logged_twice(data, tmp_path):
    run = tmp_path / "run"
    assert train_cli(data, run, "--steps", 4, "--set", "train.log_every=2")[0] == 0
    # as kill -9 would leave them: a half-written checkpoint and records past the checkpoint
    (run / "checkpoints" / ".tmp-step-0000006-abc").mkdir()
    (run / "checkpoints" / ".tmp-step-0000006-abc" / "tensors.safetensors").write_bytes(b"half")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"type": "train", "step": 6, "values": {"d_loss": 1.0}}) + "\n")
        f.write('{"type": "train", "step": 8, "val')  # a line cut short
    assert train_cli(data, run, "--steps", 8, "--set", "train.log_every=2")[0] == 0
    assert not list((run / "checkpoints").glob(".tmp*"))
    assert [r["step"] for r in records(run, "train")] == [2, 4, 6, 8]


def test_a_run_killed_before_its_first_checkpoint_does_not_log_twice(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 2, "values": {"d_loss": 1.0}}) + "\n")
    assert train_cli(data, run, "--steps", 4, "--set", "train.log_every=2")[0] == 0
    assert [r["step"] for r in records(run, "train")] == [2, 4]
