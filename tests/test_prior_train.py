"""`genforge train prior` end to end: cached codes, held-out NLL and bits/dim, sampling options,
MaskGIT, self-contained checkpoints, refusals, and bit-identical resume."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import resolve
from genforge.families import prior as P
from genforge.families.prior import PRIOR_PRESETS, PriorRunConfig
from genforge.families.schedule import lr_factor
from genforge.training import runs
from synthetic import COMMON, NUM_CLASSES, TINY_PRIOR, cli, is_png, one_error, records, train, write_idx_folder

PRIOR = families.get("prior")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """A tiny VQ-VAE on labelled data with a test split (so the prior gets a held-out NLL)."""
    root = tmp_path_factory.mktemp("prior")
    return train("vqvae", root / "vq", data=write_idx_folder(root / "bars"), steps=10)


@pytest.fixture(scope="module")
def prior_run(vq_run):
    return train("prior", vq_run.parent / "prior", vqvae=vq_run, steps=6)


def test_codes_are_cached_and_not_reencoded_on_resume(vq_run, tmp_path, monkeypatch):
    out = train("prior", tmp_path / "p", vqvae=vq_run, steps=3)
    codes = out / "codes.npz"
    with np.load(codes) as f:
        assert f["train"].shape == (256, 7, 7) and f["test"].shape == (64, 7, 7)  # 28 px, downsample 4
        assert f["train_labels"].shape == (256,)
    before = codes.stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("a resumed prior run re-encoded its data")

    monkeypatch.setattr(P, "encode_images", no_encoding)
    train("prior", out, vqvae=vq_run, steps=5)
    assert ckpt.load(out).step == 5
    assert codes.stat().st_mtime_ns == before


def test_test_nll_and_bits_per_dim_recorded(prior_run, vq_run):
    evals = records(prior_run, "eval")
    assert len(evals) == 1 and evals[0]["step"] == 6
    nats, bpd = evals[0]["values"]["code_nll"], evals[0]["values"]["code_bits_per_dim"]
    assert 0 < nats < math.log(16) + 1  # about uniform over 16 codes at worst after 6 steps
    model = yaml.safe_load((vq_run / "config.yaml").read_text())["model"]
    codes = (model["resolution"] // model["downsample"]) ** 2
    assert bpd == pytest.approx(nats * codes / (math.log(2) * model["resolution"] ** 2 * model["channels"]), rel=1e-12)


def test_sample_class_and_top_k(prior_run, tmp_path):
    code, out, err = cli(
        "sample", prior_run, "--n", 8, "--out", tmp_path / "s.png", "--class", 1, "--top-k", 5, "--device", "cpu"
    )
    assert code == 0, err
    assert is_png(tmp_path / "s.png") and "wrote 8 samples" in out


def test_sample_class_out_of_range(prior_run, tmp_path):
    code, _, err = cli("sample", prior_run, "--out", tmp_path / "s.png", "--class", NUM_CLASSES, "--device", "cpu")
    assert code == 2
    assert one_error(err) == f"genforge: error: class must be in 0..{NUM_CLASSES - 1}, got {NUM_CLASSES}"
    assert not (tmp_path / "s.png").exists()


def test_sample_truncation_is_for_gans(prior_run, tmp_path):
    code, _, err = cli("sample", prior_run, "--out", tmp_path / "s.png", "--truncation", 0.7, "--device", "cpu")
    assert code == 2 and "--truncation does not apply to a prior run (its sampling flags: --temperature" in one_error(
        err
    )


def test_maskgit_trains_and_samples(vq_run, tmp_path):
    out = train("prior", tmp_path / "mg", vqvae=vq_run, steps=4, options=["--network", "maskgit"])
    assert ckpt.load(out).config["network"] == "maskgit"
    assert set(records(out, "eval")[-1]["values"]) == {"masked_code_ce"}  # no likelihood: named as what it is
    code, _, err = cli("sample", out, "--n", 4, "--out", tmp_path / "m.png", "--decode-steps", 2, "--device", "cpu")
    assert code == 0, err
    assert is_png(tmp_path / "m.png")
    code, _, err = cli("sample", out, "--n", 4, "--out", tmp_path / "m1.png", "--steps", 2, "--device", "cpu")
    assert (
        code == 0 and err.strip() == "genforge: --steps is now --decode-steps (the old spelling still works, for now)"
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m1.png")), np.asarray(Image.open(tmp_path / "m.png")))
    code, _, err = cli("sample", out, "--n", 4, "--out", tmp_path / "m2.png", "--top-p", 0.9, "--device", "cpu")
    assert code == 2 and "sampling option 'top_p' does not apply to maskgit priors" in one_error(err)


def test_prior_samples_after_its_vqvae_run_is_deleted(vq_run, tmp_path):
    vq_copy = tmp_path / "vq"
    shutil.copytree(vq_run, vq_copy)
    out = train("prior", tmp_path / "p", vqvae=vq_copy, steps=2)
    shutil.rmtree(vq_copy)
    code, _, err = cli("sample", out, "--n", 4, "--out", tmp_path / "s.png", "--device", "cpu")
    assert code == 0, err
    assert is_png(tmp_path / "s.png")


def test_prior_on_a_gan_run_is_refused(vq_run, tmp_path):
    gan = train("gan", tmp_path / "gan", data=write_idx_folder(tmp_path / "bars", n_train=32, n_test=8), steps=1)
    code, _, err = cli(
        "train", "prior", "--vqvae", gan, "--out", tmp_path / "p", "--steps", 2, "--device", "cpu", "--quiet"
    )
    assert code == 2
    assert one_error(err).endswith("this is a 'gan' checkpoint, expected 'vqvae'")
    assert not (tmp_path / "p").exists()


def test_prior_refuses_data(vq_run, tmp_path):
    code, _, err = cli("train", "prior", "--vqvae", vq_run, "--out", tmp_path / "p", "--data", "x", "--quiet")
    assert code == 2 and "unrecognized arguments: --data x" in one_error(err)
    assert not (tmp_path / "p").exists()


def _config(vq_run, network, schedule="constant"):
    sets = (
        COMMON
        + TINY_PRIOR
        + ["train.device=cpu", "train.steps=8", "train.checkpoint_every=3", "train.log_every=2", f"network={network}"]
        + [f"optim.lr_schedule={schedule}", "optim.warmup_steps=2"]
    )
    return resolve(PriorRunConfig, PRIOR_PRESETS, "default", None, sets, {"vqvae": str(vq_run)})


@pytest.mark.parametrize(
    "network, schedule",  # maskgit also draws its masks from the family's generator
    [("ar", "constant"), ("maskgit", "constant"), ("ar", "cosine")],
)
def test_interrupted_and_resumed_prior_ends_bit_identical(vq_run, tmp_path, network, schedule):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert runs.train(PRIOR, _config(vq_run, network, schedule), whole).step == 8
    first = runs.train(PRIOR, _config(vq_run, network, schedule), parts, stop_after=4)
    assert (first.step, first.interrupted) == (4, True)
    assert records(parts, "eval") == []  # no held-out NLL for an unfinished run
    last = runs.train(PRIOR, _config(vq_run, network, schedule), parts)
    assert (last.step, last.interrupted) == (8, False)

    a, b = ckpt.load(whole), ckpt.load(parts)
    assert a.step == b.step == 8 and set(a.tensors) == set(b.tensors)
    for name in a.tensors:  # prior, embedded VQ-VAE, optimizer moments, RNG states
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    # the same losses at the same steps, and the same held-out NLL at the end
    assert _without_timing(records(parts)) == _without_timing(records(whole))
    assert records(parts, "eval")[0]["step"] == 8
    lr = a.state["optimizers"]["prior"]["param_groups"][0]["lr"]
    factor = lr_factor(7, 2, 8, schedule, 0.1)  # the last step's: 5/6 of the way down a cosine
    assert lr == pytest.approx(1e-3 * factor) and (factor < 0.2) == (schedule == "cosine")


def _without_timing(lines: list[dict]) -> list[dict]:
    return [{**r, "time": None, "values": {k: v for k, v in r["values"].items() if k != "images_per_s"}} for r in lines]


def test_a_run_from_before_the_schedule_and_attention_options_resumes(vq_run, tmp_path):
    """Written before optim.lr_schedule, optim.lr_final_ratio and model.attn_dropout existed, when
    attention dropout was the model's dropout: it resumes, and trains as it did."""
    out = train("prior", tmp_path / "old", vqvae=vq_run, steps=3, extra=["model.attn_dropout=0.1"])
    for meta in out.glob("checkpoints/step-*/meta.json"):
        values = json.loads(meta.read_text())
        for name in ("lr_schedule", "lr_final_ratio"):
            del values["config"]["optim"][name]
        del values["config"]["model"]["attn_dropout"]
        meta.write_text(json.dumps(values))
    assert ckpt.load(train("prior", out, vqvae=vq_run, steps=5, extra=["model.attn_dropout=0.1"])).step == 5
    assert P.SPEC.config_of(ckpt.load(out)).model.attn_dropout == 0.1
