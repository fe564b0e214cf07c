"""GAN losses pinned in closed form, penalties on critics with known gradients, DCGAN shapes,
and a few-step training smoke test per loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.config import resolve
from genforge.errors import GenforgeError
from genforge.families.gan import fit_to_data
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer
from genforge.losses import GAN_LOSSES, gradient_penalty, r1_penalty
from genforge.models.gan import DCGANConfig, Discriminator, Generator, layout
from genforge.training.batches import Batches

REAL = [0.5, -1.0, 2.0]
FAKE = [-0.3, 1.2]


def mean(values):
    return sum(values) / len(values)


def softplus(v):
    return math.log1p(math.exp(v))


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


# name -> (d_real, d_fake, g_adv) computed by hand from REAL and FAKE
EXPECTED = {
    # -log D(x) and -log(1 - D(G(z))), D = sigmoid; generator -log D(G(z))
    "nonsaturating": (
        mean([-math.log(sigmoid(r)) for r in REAL]),
        mean([-math.log(1 - sigmoid(f)) for f in FAKE]),
        mean([-math.log(sigmoid(f)) for f in FAKE]),
    ),
    "hinge": (mean([max(0, 1 - r) for r in REAL]), mean([max(0, 1 + f) for f in FAKE]), -mean(FAKE)),
    "lsgan": (
        0.5 * mean([(r - 1) ** 2 for r in REAL]),
        0.5 * mean([f**2 for f in FAKE]),
        0.5 * mean([(f - 1) ** 2 for f in FAKE]),
    ),
    "wgan-gp": (-mean(REAL), mean(FAKE), -mean(FAKE)),
}


def test_every_loss_is_pinned():
    assert set(GAN_LOSSES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gan_loss_closed_form(name):
    d_loss, g_loss = GAN_LOSSES[name]
    real, fake = torch.tensor(REAL, requires_grad=True), torch.tensor(FAKE, requires_grad=True)
    d_real, d_fake, g_adv = EXPECTED[name]

    total, parts = d_loss(real, fake)
    assert total.item() == pytest.approx(d_real + d_fake, rel=1e-6)
    assert parts["d_real"].item() == pytest.approx(d_real, rel=1e-6)
    assert parts["d_fake"].item() == pytest.approx(d_fake, rel=1e-6)
    assert not any(p.requires_grad for p in parts.values())  # logged parts are detached
    total.backward()
    assert real.grad is not None and fake.grad is not None

    total, parts = g_loss(torch.tensor(FAKE))
    assert total.item() == pytest.approx(g_adv, rel=1e-6)
    assert set(parts) == {"g_adv"} and parts["g_adv"].item() == pytest.approx(g_adv, rel=1e-6)


def test_nonsaturating_is_the_softplus_form():
    r, f = torch.tensor(REAL), torch.tensor(FAKE)
    total, _ = GAN_LOSSES["nonsaturating"][0](r, f)
    assert total.item() == pytest.approx(
        mean([softplus(-x) for x in REAL]) + mean([softplus(x) for x in FAKE]), rel=1e-6
    )


def linear_critic(w: torch.Tensor, b: float = 0.3):
    """D(x) = <w, x> + b per sample: its gradient with respect to x is w everywhere."""
    return lambda x: (x * w).flatten(1).sum(1) + b


def test_r1_penalty_on_a_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(1, 2, 3, 3).requires_grad_(True)
    x = torch.randn(4, 2, 3, 3).requires_grad_(True)
    gamma = 5.0
    total, parts = r1_penalty(x, linear_critic(w)(x), gamma)
    squared_norm = w.pow(2).sum().item()
    assert parts["r1"].item() == pytest.approx(squared_norm, rel=1e-5)
    assert total.item() == pytest.approx(gamma / 2 * squared_norm, rel=1e-5)
    # create_graph: the penalty reaches D's weights, d/dw (gamma/2 ||w||^2) = gamma w
    total.backward()
    assert torch.allclose(w.grad, gamma * w.detach(), rtol=1e-5)


def test_r1_penalty_averages_per_sample_squared_norms():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    logits = (x**2).sum(1)  # gradient 2x per sample: squared norms 20 and 40
    total, parts = r1_penalty(x, logits, gamma=1.0)
    assert parts["r1"].item() == pytest.approx(30.0)
    assert total.item() == pytest.approx(15.0)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 4, 4)
    w /= w.norm()
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    total, parts = gradient_penalty(linear_critic(w), real, fake, 10.0)
    assert total.item() == pytest.approx(0.0, abs=1e-10)
    # twice the norm: (2 - 1)^2 = 1 per sample, times the weight
    total, parts = gradient_penalty(linear_critic(2 * w), real, fake, 10.0)
    assert parts["gp"].item() == pytest.approx(1.0, rel=1e-5)
    assert total.item() == pytest.approx(10.0, rel=1e-5)


def test_gradient_penalty_follows_the_generator():
    torch.manual_seed(0)
    critic = lambda x: (x**3).flatten(1).sum(1)  # noqa: E731 - gradient depends on where it is taken
    real, fake = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    first = gradient_penalty(critic, real, fake, 1.0, torch.Generator().manual_seed(3))[0]
    again = gradient_penalty(critic, real, fake, 1.0, torch.Generator().manual_seed(3))[0]
    other = gradient_penalty(critic, real, fake, 1.0, torch.Generator().manual_seed(4))[0]
    assert first.item() == again.item() != other.item()


# ---------------------------------------------------------------------------------------------
# DCGAN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, start, steps", [(28, 7, 2), (32, 4, 3), (48, 6, 3), (64, 4, 4), (16, 4, 2)])
def test_layout(resolution, start, steps):
    assert layout(resolution) == (start, steps)


@pytest.mark.parametrize("resolution", [30, 12, 36, 8, 100])
def test_unsupported_resolutions_raise(resolution):
    with pytest.raises(GenforgeError, match=f"DCGAN resolution {resolution} is not supported"):
        layout(resolution)
    with pytest.raises(GenforgeError, match="not supported"):
        DCGANConfig(resolution=resolution, channels=1)


@pytest.mark.parametrize("resolution", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(resolution, channels):
    cfg = DCGANConfig(z_dim=16, g_width=8, d_width=8, resolution=resolution, channels=channels)
    G, D = Generator(cfg), Discriminator(cfg)
    images = G(torch.randn(3, 16))
    assert images.shape == (3, channels, resolution, resolution)
    assert images.abs().max() <= 1  # tanh output
    assert D(images).shape == (3,)


def test_max_width_caps_the_widths():
    cfg = DCGANConfig(z_dim=8, g_width=8, d_width=8, max_width=16, resolution=64, channels=1)
    widths = [m.out_channels for m in Generator(cfg).modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [16, 16, 16, 8, 1]


@pytest.mark.parametrize("norm", ["spectral", "none"])
def test_discriminator_norm_variants_build(norm):
    cfg = DCGANConfig(z_dim=8, g_width=8, d_width=8, d_norm=norm, resolution=32, channels=1)
    D = Discriminator(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(hasattr(c, "parametrizations") == (norm == "spectral") for c in convs)
    assert D(torch.randn(2, 1, 32, 32)).shape == (2,)


def test_spectral_norm_bounds_the_layers():
    cfg = DCGANConfig(z_dim=8, g_width=8, d_width=8, d_norm="spectral", resolution=32, channels=1)
    D = Discriminator(cfg).train()
    for _ in range(30):  # power iterations converge during forward passes
        D(torch.randn(2, 1, 32, 32))
    for conv in (m for m in D.modules() if isinstance(m, torch.nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_wgan_gp_with_batch_norm_is_refused():
    with pytest.raises(GenforgeError, match="wgan-gp needs a critic without batch norm"):
        resolve(GANRunConfig, GAN_PRESETS, None, None, ["optim.loss=wgan-gp"])
    assert resolve(GANRunConfig, GAN_PRESETS, "wgan-gp").model.d_norm == "none"


def test_build_config_takes_the_data_shape_and_refuses_a_conflict():
    cfg = fit_to_data(GANRunConfig(), 28, 3)
    assert (cfg.model.resolution, cfg.model.channels) == (28, 3)
    with pytest.raises(GenforgeError, match="model.resolution is 32 but the data gives 28"):
        fit_to_data(GANRunConfig(model=DCGANConfig(resolution=32)), 28, 1)
    with pytest.raises(GenforgeError, match="DCGAN resolution 30"):
        fit_to_data(GANRunConfig(), 30, 1)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def tiny_family(*sets: str, resolution: int = 32, channels: int = 1) -> GANTrainer:
    base = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.precision=fp32"]
    cfg = resolve(GANRunConfig, GAN_PRESETS, None, None, base + list(sets))
    return GANTrainer(fit_to_data(cfg, resolution, channels), torch.device("cpu"))


def synthetic_batches(n: int = 32, resolution: int = 32, channels: int = 1) -> Batches:
    images = np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, channels), dtype=np.uint8)
    return Batches(torch.from_numpy(images), None, batch_size=8, seed=0)


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["optim.loss=hinge", "model.d_norm=spectral"],
        ["optim.loss=lsgan"],
        ["optim.loss=wgan-gp", "model.d_norm=none", "optim.d_steps=2"],
        ["optim.r1_gamma=1.0", "optim.ema_decay=0.9", "model.d_norm=spectral"],
    ],
    ids=["nonsaturating", "hinge-sn", "lsgan", "wgan-gp", "r1-ema"],
)
def test_few_steps_train(sets):
    family = tiny_family(*sets)
    data = synthetic_batches()
    g_before = {k: v.clone() for k, v in family.G.state_dict().items()}
    d_before = {k: v.clone() for k, v in family.D.state_dict().items()}
    history = []
    for step in range(4):
        losses = family.train_step(*data.get(step))
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
        history.append({k: float(v) for k, v in losses.items()})
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(history[-1])
    if "optim.r1_gamma=1.0" in sets:
        assert history[-1]["r1"] > 0
    if "optim.loss=wgan-gp" in sets:
        assert "gp" in history[-1]
    assert history[0]["d_loss"] != history[-1]["d_loss"]
    assert any(not torch.equal(v, family.G.state_dict()[k]) for k, v in g_before.items() if v.is_floating_point())
    assert any(not torch.equal(v, family.D.state_dict()[k]) for k, v in d_before.items() if v.is_floating_point())
    assert family.steps_done == 4
    grid = family.sample_grid(4, torch.Generator().manual_seed(0))
    assert grid.shape == (4, 1, 32, 32) and torch.isfinite(grid).all()


def test_rgb_family_trains():
    family = tiny_family(resolution=28, channels=3)
    losses = family.train_step(*synthetic_batches(16, 28, 3).get(0))
    assert torch.isfinite(losses["g_loss"])


def test_ema_differs_from_g_and_moves_towards_it():
    family = tiny_family("optim.ema_decay=0.99")
    assert family.sampler is family.G_ema
    data = synthetic_batches()
    for step in range(3):
        family.train_step(*data.get(step))
    ema_before = [p.clone() for p in family.G_ema.parameters()]
    family.train_step(*data.get(3))
    n = family.steps_done  # 4: still in the warm-up, decay = (1 + n) / (10 + n)
    decay = min(0.99, (1 + n) / (10 + n))
    distances = []
    for old, new, g in zip(ema_before, family.G_ema.parameters(), family.G.parameters()):
        # each update moves the average a fraction (1 - decay) of the way to G
        assert torch.allclose(new, g + decay * (old - g), atol=1e-6)
        distances.append((new - g).norm().item())
    assert sum(distances) > 0  # the EMA is not a copy of G
    assert not family.G_ema.training and not any(p.requires_grad for p in family.G_ema.parameters())
    for eb, b in zip(family.G_ema.buffers(), family.G.buffers()):
        assert torch.equal(eb, b)  # BN statistics are copied, not averaged


def test_ema_decay_reaches_its_setting_after_warm_up():
    family = tiny_family("optim.ema_decay=0.5")
    family.steps_done = 1000
    ema_before = [p.clone() for p in family.G_ema.parameters()]
    with torch.no_grad():
        for p in family.G.parameters():
            p.add_(1.0)
    family._update_ema()
    for old, new, g in zip(ema_before, family.G_ema.parameters(), family.G.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * g, atol=1e-6)


def test_no_ema_when_decay_is_zero():
    family = tiny_family()
    assert family.G_ema is None and family.sampler is family.G
    assert set(family.modules()) == {"G", "D"}
