"""Colour and small data for GANs: discriminator augmentation (DiffAugment, ADA), class-conditional
GANs, the StyleGAN2 family, resolution that follows the data, per-class grids, ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge import checkpoint as ckpt
from genforge.config import resolve
from genforge.families.gan import fit_to_data
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer
from genforge.families.sampling import write_sampling
from genforge.models.gan import ClassBatchNorm
from genforge.report import collect, render
from synthetic import COMMON, NUM_CLASSES, TINY_GAN, cli, install_evaluator, is_png, one_error, records, sets, write_npz

TINY_STYLEGAN2 = ["model.width=8", "model.max_width=16", "model.z_dim=16", "model.w_dim=16"]


def train(family: str, data, out: Path, *values: str, steps: int = 6, preset: str = "default") -> Path:
    tiny = TINY_GAN if family == "gan" else TINY_STYLEGAN2
    args = ["train", family, "--data", data, "--out", out, "--steps", steps, "--preset", preset, "--device", "cpu"]
    code, _, err = cli(*args, "--quiet", *sets(COMMON, tiny, list(values)))
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "bars.npz", n=128)


def colour_folder(root: Path, n: int = 24, size: int = 64) -> Path:
    """A folder of 64x64 colour PNGs in two class sub-folders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("red" if i % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        picture = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        picture[..., 0 if i % 2 else 2] += 180
        Image.fromarray(picture).save(folder / f"{i:03d}.png")
    return root


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------


def test_ada_p_is_logged_checkpointed_and_resumed_exactly(bars, tmp_path):
    values = ["augment.speed=2000", "augment.interval=2", "train.log_every=2", "train.checkpoint_every=3"]
    whole = train("gan", bars, tmp_path / "whole", *values, steps=8, preset="ada")
    parts = tmp_path / "parts"
    train("gan", bars, parts, *values, steps=3, preset="ada")
    train("gan", bars, parts, *values, steps=8, preset="ada")
    logs = [r["values"] for r in records(whole, "train")]
    assert all("augment_p" in v and "r_t" in v for v in logs)
    assert len({v["augment_p"] for v in logs}) > 1  # it moved
    a, b = ckpt.load(whole), ckpt.load(parts)
    assert a.state["extra"]["ada"] == b.state["extra"]["ada"]
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    resumed = {r["step"]: r["values"]["augment_p"] for r in records(parts, "train")}
    assert all(resumed[r["step"]] == r["values"]["augment_p"] for r in records(whole, "train"))


def test_diffaugment_reaches_the_discriminator_for_reals_and_fakes():
    cfg = resolve(GANRunConfig, GAN_PRESETS, "diffaugment", None, ["model.z_dim=16", *TINY_GAN, "train.batch_size=8"])
    trainer = GANTrainer(fit_to_data(cfg, 32, 1), torch.device("cpu"))
    seen = []
    step_d = trainer.step_d
    trainer.step_d = lambda x, y=None: (seen.append(x.detach()), step_d(x, y))[1]
    real = torch.zeros(8, 1, 32, 32)
    trainer.train_step(real, None)
    assert not torch.equal(seen[0], real)  # the reals D saw were augmented (translation, cutout, colour)
    assert len(seen) == 3  # D on real and fake for D's update, then on fake for G's


def test_report_draws_the_augmentation_curve(bars, tmp_path):
    run = train("gan", bars, tmp_path / "ada", "train.log_every=2", "augment.speed=1000", preset="ada")
    page = render([collect(run)])
    assert page.count("data:image/png;base64,") >= 2


# ---------------------------------------------------------------------------------------------
# class-conditional GANs
# ---------------------------------------------------------------------------------------------


def test_conditional_gan_samples_by_class_and_draws_a_row_per_class(bars, tmp_path):
    run = train("gan", bars, tmp_path / "cgan", preset="conditional")
    c = ckpt.load(run)
    assert c.config["model"]["num_classes"] == NUM_CLASSES
    grid = Image.open(run / "samples" / "classes.png")
    assert grid.height > grid.width * (NUM_CLASSES - 1) / 10  # NUM_CLASSES rows of 10
    code, out, err = cli("sample", run, "--n", 4, "--class", 2, "--out", tmp_path / "c2.png", "--device", "cpu")
    assert code == 0 and is_png(tmp_path / "c2.png"), err
    code, _, err = cli("sample", run, "--n", 4, "--class", NUM_CLASSES, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and f"class must be in 0..{NUM_CLASSES - 1}" in err
    assert "samples by class" in render([collect(run)])


def test_class_conditioning_changes_the_images():
    cfg = resolve(GANRunConfig, GAN_PRESETS, "conditional", None, ["model.z_dim=16", *TINY_GAN])
    G = GANTrainer(fit_to_data(cfg, 32, 1, num_classes=4), torch.device("cpu")).G.eval()
    z = torch.randn(2, 16)
    assert not torch.equal(G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1])))


def test_class_batch_norm_gives_each_class_its_own_scale_and_shift():
    cfg = resolve(GANRunConfig, GAN_PRESETS, "conditional", None, ["model.z_dim=16", "model.g_class=cbn", *TINY_GAN])
    G = GANTrainer(fit_to_data(cfg, 32, 1, num_classes=4), torch.device("cpu")).G
    assert G.class_emb is None and G.net[0].in_channels == 16  # z alone enters; the class acts in the norms
    norms = [m for m in G.net if isinstance(m, ClassBatchNorm)]
    assert len(norms) == len([m for m in G.net if isinstance(m, torch.nn.ConvTranspose2d)]) - 1
    norm = norms[0]
    with torch.no_grad():  # class 1 gets gain 2 and shift 3; class 0 keeps (1, 0)
        norm.gain.weight.fill_(1.0)
        norm.gain.weight[1] = 2.0
        norm.bias.weight.zero_()
        norm.bias.weight[1] = 3.0
    x = torch.randn(6, norm.bn.num_features, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    out = norm.train()(x, y)
    plain = torch.nn.functional.batch_norm(x, None, None, training=True, eps=norm.bn.eps)
    torch.testing.assert_close(out[y == 0], plain[y == 0])
    torch.testing.assert_close(out[y == 1], 2.0 * plain[y == 1] + 3.0)
    G.eval()
    z = torch.randn(2, 16)
    assert not torch.equal(G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1])))


def test_class_batch_norm_trains_samples_by_class_and_exports(bars, tmp_path):
    run = train("gan", bars, tmp_path / "cbn", "model.g_class=cbn", "optim.mode_seeking=1.0", preset="conditional")
    assert ckpt.load(run).config["model"]["g_class"] == "cbn"
    logs = [r["values"] for r in records(run, "train")]
    assert all(v["mode_seeking_ratio"] > 0 for v in logs)
    code, _, err = cli("sample", run, "--n", 4, "--class", 1, "--out", tmp_path / "c1.png", "--device", "cpu")
    assert code == 0 and is_png(tmp_path / "c1.png"), err


def test_mode_seeking_pushes_two_latents_of_one_class_apart():
    """One generator step on the mode-seeking term alone (the adversarial part zeroed) raises the
    image distance per latent distance it measures, on the same latents."""
    values = ["model.z_dim=16", *TINY_GAN, "train.batch_size=8", "optim.mode_seeking=1.0", "optim.lr_g=0.01"]
    cfg = resolve(GANRunConfig, GAN_PRESETS, "conditional", None, values)
    trainer = GANTrainer(fit_to_data(cfg, 32, 1, num_classes=4), torch.device("cpu"))
    trainer.g_loss_fn = lambda logits: (0.0 * logits.sum(), {})
    trainer.d_loss_fn = lambda real, fake: (0.0 * (real.sum() + fake.sum()), {})
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    real = torch.zeros(8, 1, 32, 32)
    ratios = []
    for _ in range(3):
        trainer.noise.manual_seed(0)  # the same latents each step
        ratios.append(float(trainer.train_step(real, labels)["mode_seeking_ratio"]))
    assert ratios[2] > ratios[1] > ratios[0], ratios


def test_an_unconditional_gan_refuses_a_class(bars, tmp_path):
    run = train("gan", bars, tmp_path / "gan")
    code, _, err = cli("sample", run, "--class", 1, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and "trained without labels" in err


# ---------------------------------------------------------------------------------------------
# StyleGAN2 through the registry
# ---------------------------------------------------------------------------------------------


def test_stylegan2_trains_resumes_and_samples_with_truncation(bars, tmp_path):
    values = ["optim.r1_interval=2", "train.log_every=2", "train.checkpoint_every=3"]
    whole = train("stylegan2", bars, tmp_path / "whole", *values, steps=6)
    parts = tmp_path / "parts"
    train("stylegan2", bars, parts, *values, steps=3)
    train("stylegan2", bars, parts, *values, steps=6)
    a, b = ckpt.load(whole), ckpt.load(parts)
    assert a.kind == "stylegan2" and set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert any(k.startswith("model.G_ema.") for k in a.tensors)
    assert "r1" in records(whole, "train")[-1]["values"] or any("r1" in r["values"] for r in records(whole, "train"))
    for psi in ("1.0", "0.0"):
        code, _, err = cli("sample", whole, "--n", 4, "--truncation", psi, "--out", tmp_path / f"s{psi}.npz",
                           "--format", "npz", "--device", "cpu")  # fmt: skip
        assert code == 0, err
    with np.load(tmp_path / "s0.0.npz") as f:
        images = f["images"]
    assert all(np.array_equal(images[0], im) for im in images)  # psi 0: every z gives the mean w's image
    # a tuned psi (sampling.json) is the default: psi 0 again, without asking for it
    write_sampling(whole, {"step": 6, "chosen": {"truncation": 0.0}, "candidates": []})
    code, out, err = cli("sample", whole, "--n", 4, "--seed", 5, "--out", tmp_path / "t.npz", "--format", "npz",
                         "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "sampling: truncation 0.0 (from" in out
    with np.load(tmp_path / "t.npz") as f:
        assert np.array_equal(f["images"], images)
    write_sampling(whole, {"step": 6, "chosen": {"truncation": -0.5}, "candidates": []})
    code, _, err = cli("sample", whole, "--n", 4, "--out", tmp_path / "u.png", "--device", "cpu")
    assert code == 2 and "sampling.json: truncation (psi) must be a finite number >= 0" in one_error(err)


def test_stylegan2_conditional_on_colour_data_at_the_datas_resolution(tmp_path):
    folder = colour_folder(tmp_path / "colour")
    run = train("stylegan2", folder, tmp_path / "sg", steps=2, preset="conditional")
    model = ckpt.load(run).config["model"]
    assert (model["resolution"], model["channels"], model["num_classes"]) == (64, 3, 2)
    assert is_png(run / "samples" / "classes.png")


# ---------------------------------------------------------------------------------------------
# any image folder trains with the defaults
# ---------------------------------------------------------------------------------------------


def test_a_folder_of_64px_colour_images_trains_with_the_defaults(tmp_path):
    folder = colour_folder(tmp_path / "colour")
    out = tmp_path / "run"
    code, _, err = cli("train", "gan", "--data", folder, "--out", out, "--steps", 2, "--device", "cpu",
                       *sets(COMMON, TINY_GAN))  # fmt: skip
    assert code == 0, err
    config = ckpt.load(out).config
    assert (config["data"]["resolution"], config["data"]["fit"], config["model"]["channels"]) == (64, "none", 3)
    assert "images of 64x64 are larger" not in err
    code, _, err = cli("train", "vqvae", "--data", folder, "--out", tmp_path / "vq", "--steps", 2, "--device", "cpu",
                       "--quiet", *sets(COMMON, ["model.width=8", "model.latent_dim=8"]))  # fmt: skip
    assert code == 0, err


def test_a_size_the_model_lacks_goes_to_the_nearest_it_has(tmp_path):
    folder = colour_folder(tmp_path / "colour", size=60)
    out = tmp_path / "run"
    code, _, err = cli("train", "gan", "--data", folder, "--out", out, "--steps", 1, "--device", "cpu",
                       *sets(COMMON, TINY_GAN))  # fmt: skip
    assert code == 0, err
    data = ckpt.load(out).config["data"]
    assert (data["resolution"], data["fit"]) == (64, "resize")  # 60 is not s*2^k; 64 is the nearest DCGAN size
    assert "60x60 -> 64x64 (resize)" in err  # said in one line


def test_fashion_mnist_keeps_its_padding(fashion_available, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train", "gan", "--data", "fashion-mnist", "--out", out, "--dry-run", *sets(COMMON))
    assert code == 0, err
    assert "resolution: 32\n  fit: pad" in _


# ---------------------------------------------------------------------------------------------
# ONNX export of trained runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, preset", [("gan", "conditional"), ("stylegan2", "default")])
def test_export_a_trained_generator(bars, tmp_path, family, preset):
    run = train(family, bars, tmp_path / family, steps=2, preset=preset)
    code, out, err = cli("export", run, "--out", tmp_path / "g.onnx")
    assert code == 0, err
    assert "wrote the generator" in out and "max |onnxruntime - torch|" in out
    meta = __import__("genforge.commands.export", fromlist=["read_metadata"]).read_metadata(tmp_path / "g.onnx")
    assert meta["kind"] == family and json.loads(meta["config"])["model"]["resolution"] == 32


def test_export_refuses_what_cannot_be_exported(bars, tmp_path):
    run = train("gan", bars, tmp_path / "gan", steps=1)
    code, _, err = cli("export", run, "--out", tmp_path / "x.onnx", "--part", "decoder")
    assert code == 2 and "exports generator; there is no part 'decoder'" in err
    prior = tmp_path / "prior"
    ckpt.save(prior, 1, "prior", {}, {"w": torch.zeros(1)}, {})
    code, _, err = cli("export", prior, "--out", tmp_path / "p.onnx")
    assert code == 2 and "cannot export a prior run to ONNX: its sampling loop" in err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "p.onnx").exists()


def test_evaluate_a_conditional_gan_draws_classes_as_the_data_does(bars, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    install_evaluator(cache, str(bars))
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    run = train("gan", bars, tmp_path / "cgan", steps=2, preset="conditional")
    code, out, err = cli("evaluate", run, "--n", 64, "--device", "cpu", "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["kind"] == "gan" and {"fd", "class_kl", "classes_covered"} <= set(scores)
    assert 0 <= scores["class_accuracy_min"] <= scores["class_accuracy"] <= 1
