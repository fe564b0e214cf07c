"""The VQGAN recipe's perceptual term, offline: the distance in closed form, its weight pinned to its
term, a frozen network that no gradient, optimizer or checkpoint touches, a loss that falls in a
few steps, and a run with it (and the discriminator, and a cosine schedule) that resumes exactly."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import resolve
from genforge.data import dataset_key, load_dataset
from genforge.errors import GenforgeError
from genforge.families.vqvae import VQVAE_PRESETS, VQVAERunConfig, VQVAETrainer
from genforge.losses import perceptual_distance, vqvae_loss
from genforge.metrics.classifier import Classifier, ClassifierConfig, save_classifier, train_classifier
from genforge.models.perceptual import CLASSIFIER_SEED, ClassifierMaps
from genforge.training import runs
from synthetic import COMMON, TINY_VQVAE, cli, one_error, records, train, write_npz

VQVAE = families.get("vqvae")


def test_distance_in_closed_form():
    x = torch.rand(2, 3, 4, 4) + 0.1
    assert perceptual_distance([x], [x]).item() == 0
    assert perceptual_distance([x], [5 * x]).item() == pytest.approx(0, abs=1e-6)  # per-position direction only
    # Opposite unit vectors are 2 apart at every position: squared, 4 per layer; the weights scale layers.
    assert perceptual_distance([x, x], [-x, -x]).item() == pytest.approx(8)
    assert perceptual_distance([x, x], [-x, x], weights=[0.5, 3.0]).item() == pytest.approx(2)
    e0, e1 = torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    e0[0, 0], e1[0, 1] = 1.0, 1.0
    assert perceptual_distance([e0], [e1]).item() == pytest.approx(2)  # orthogonal: |e0 - e1|^2


def test_weight_belongs_to_the_perceptual_term():
    x, recon = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    q_loss, q_parts = torch.tensor(0.3), {"codebook": torch.tensor(0.0), "commitment": torch.tensor(0.3)}
    plain, parts = vqvae_loss(x, recon, q_loss, q_parts)
    assert "perceptual" not in parts
    perceptual = torch.tensor(0.7)
    total, parts = vqvae_loss(x, recon, q_loss, q_parts, perceptual=perceptual, perceptual_weight=2.0)
    assert total.item() == pytest.approx(0.25 + 0.3 + 2.0 * 0.7)
    assert parts["perceptual"].item() == pytest.approx(0.7)  # logged unweighted, as recon_mse is
    assert parts["recon_mse"].item() == pytest.approx(0.25) and parts["quantizer"].item() == pytest.approx(0.3)
    unweighted, _ = vqvae_loss(x, recon, q_loss, q_parts, perceptual=perceptual, perceptual_weight=0.0)
    assert unweighted.item() == pytest.approx(plain.item())


def test_feature_network_stays_frozen():
    torch.manual_seed(0)
    net = ClassifierMaps(Classifier(ClassifierConfig(channels=1, num_classes=4)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()  # a trainer toggling modes must not unfreeze BatchNorm
    assert not net.training and not net.net.training
    x = torch.rand(4, 1, 28, 28, requires_grad=True)  # 28 px: padded to the classifier's 32, differentiably
    maps = net(x)
    assert [tuple(m.shape) for m in maps] == [(4, 24, 16, 16), (4, 48, 8, 8), (4, 96, 4, 4)]
    perceptual_distance(maps, net(torch.rand(4, 1, 28, 28))).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the images...
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())  # ...not the network
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics too


def install_perceptual(cache, source) -> None:
    """The perceptual classifier where training looks for it (beside the evaluator, another seed)."""
    key = dataset_key(source, "train", None, "none", None)
    data = load_dataset(source, split="train")
    model, accuracy = train_classifier(
        data.images, data.labels, data.images, data.labels, epochs=1, batch_size=64, seed=1
    )
    save_classifier(
        model, cache / "evaluators" / f"{key}-seed{CLASSIFIER_SEED}", test_accuracy=accuracy, dataset_key=key
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("perceptual")
    data = write_npz(root / "bars.npz", n=128)
    install_perceptual(root / "cache", str(data))
    return root, data


@pytest.fixture(autouse=True)
def cache(world, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(world[0] / "cache"))


def test_a_few_steps_reduce_the_perceptual_distance(world, tmp_path):
    root, data = world
    extra = ["optim.perceptual_weight=1.0", "optim.lr=3e-3", "train.log_every=10", "train.channels_last=false"]
    out = train("vqvae", tmp_path / "vq", data=data, steps=40, extra=extra)
    logs = [r["values"] for r in records(out, "train")]
    assert len(logs) == 4 and all("perceptual" in r for r in logs)
    assert logs[-1]["perceptual"] < 0.8 * logs[0]["perceptual"], [r["perceptual"] for r in logs]
    c = ckpt.load(out)
    assert not any("perceptual" in name or name.startswith("model.net.") for name in c.tensors)
    assert set(n.split(".")[1] for n in c.tensors if n.startswith("model.")) == {"vqvae"}
    assert len(c.state["extra"]["perceptual_net"]) == 16  # the fingerprint of the network it trained with


def _config(data, *extra):
    sets = (
        COMMON
        + TINY_VQVAE
        + ["train.device=cpu", "train.steps=10", "train.checkpoint_every=4", "train.log_every=2"]
        + ["train.channels_last=false", *extra]
    )
    return resolve(VQVAERunConfig, VQVAE_PRESETS, "vqgan", None, sets, {"data": {"source": str(data)}})


def test_vqgan_with_cosine_schedule_resumes_bit_identical(world, tmp_path):
    _, data = world
    # the discriminator joins at step 3, inside the first session; the cosine decays over the 10 steps
    extra = ["optim.disc_start=3", "optim.lr_schedule=cosine", "optim.warmup_steps=2", "discriminator.width=8"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert runs.train(VQVAE, _config(data, *extra), whole).step == 10
    first = runs.train(VQVAE, _config(data, *extra), parts, stop_after=5)
    assert (first.step, first.interrupted) == (5, True)
    assert runs.train(VQVAE, _config(data, *extra), parts).step == 10

    a, b = ckpt.load(whole), ckpt.load(parts)
    assert set(a.tensors) == set(b.tensors) and "model.disc.net.0.weight" in a.tensors
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.state["extra"] == b.state["extra"] and a.state["extra"]["schedule"]["total_steps"] == 10
    logs = [r["values"] for r in records(whole, "train")]
    assert {"perceptual", "g_adv", "adv_weight", "d_loss"} <= set(logs[-1])
    # the last step (index 9) ran at 7/8 of the decay after the 2 warm-up steps
    lr = a.state["optimizers"]["vqvae"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(7 / 8 * math.pi))))


def test_resume_with_another_perceptual_network_is_refused(world, tmp_path, monkeypatch):
    root, data = world
    out = tmp_path / "vq"
    runs.train(VQVAE, _config(data, "optim.disc_weight=0"), out, stop_after=2)
    folder = next((root / "cache" / "evaluators").glob("*-seed1"))
    saved = folder.with_name(folder.name + ".bak")
    folder.rename(saved)
    try:
        torch.manual_seed(5)
        other = Classifier(ClassifierConfig(channels=1, num_classes=4))
        save_classifier(
            other, folder, test_accuracy=0.0, dataset_key=dataset_key(str(data), "train", None, "none", None)
        )
        with pytest.raises(GenforgeError, match="perceptual network .* is not the one this run trained with"):
            runs.train(VQVAE, _config(data, "optim.disc_weight=0"), out)
    finally:
        shutil.rmtree(folder)
        saved.rename(folder)


def test_a_trainer_without_its_network_is_refused():
    cfg = _config("unused.npz")
    cfg.model.channels, cfg.model.resolution = 1, 32
    with pytest.raises(GenforgeError, match="perceptual_weight > 0 needs the frozen perceptual network"):
        VQVAETrainer(cfg, torch.device("cpu"))


def test_perceptual_classifier_on_unlabelled_data_is_refused_before_anything_is_written(tmp_path):
    data = write_npz(tmp_path / "d.npz", n=32, labelled=False)
    code, _, err = cli(
        "train", "vqvae", "--data", data, "--out", tmp_path / "vq", "--steps", 1, "--quiet", "--preset", "perceptual"
    )
    assert code == 2 and "optim.perceptual_net=inception" in one_error(err)
    assert not (tmp_path / "vq").exists()
