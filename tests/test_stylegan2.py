"""StyleGAN2: closed forms of its parts (demodulation, equalized lr, FIR resampling, minibatch std,
truncation, w_avg), shapes across resolutions, conditioning, gradients, a few training steps,
bf16 autocast, seeded determinism, checkpoint round trip, config errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genforge.config import ConfigError
from genforge.errors import GenforgeError
from genforge.models.stylegan2 import (
    FIR,
    Discriminator,
    EqualConv2d,
    EqualLinear,
    Generator,
    StyleGAN2Config,
    downsample2d,
    minibatch_std,
    modulated_conv2d,
    upsample2d,
    widths,
)


def tiny(resolution=16, channels=1, num_classes=0, **overrides) -> StyleGAN2Config:
    values = dict(z_dim=16, w_dim=16, mapping_layers=2, width=4, max_width=16)
    values.update(overrides)
    return StyleGAN2Config(resolution=resolution, channels=channels, num_classes=num_classes, **values)


def seeded(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- closed forms of the parts ---------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_demodulated_conv_gives_unit_variance_whatever_the_style_scale(scale):
    torch.manual_seed(0)
    x = torch.randn(16, 16, 32, 32)  # i.i.d. unit variance
    weight = torch.randn(8, 16, 3, 3)
    styles = scale * (torch.rand(16, 16) + 0.5)
    out = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # interior: full 3x3 windows
    # Each output is a unit-norm combination of i.i.d. unit-variance inputs, so its variance is 1;
    # 14,400 spatially correlated values per channel estimate it to within a few percent.
    assert torch.allclose(out.var(dim=(0, 2, 3)), torch.ones(8), atol=0.1)


def test_demodulation_cancels_the_style_scale():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 3, 3), torch.rand(2, 8) + 0.5
    small = modulated_conv2d(x, weight, 0.01 * styles)
    large = modulated_conv2d(x, weight, 100 * styles)
    assert torch.allclose(small, large, rtol=1e-4, atol=1e-5)


def test_modulated_conv_equals_the_references_per_sample_weights():
    """Our non-fused path (scale input, shared conv, scale output) against explicit per-sample
    demodulated weights run as one grouped convolution, the reference's fused path."""
    torch.manual_seed(0)
    B, I, O = 3, 5, 4
    x, weight, styles = torch.randn(B, I, 7, 7), torch.randn(O, I, 3, 3), torch.randn(B, I)
    w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, 3, 3)
    w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    expected = F.conv2d(x.reshape(1, B * I, 7, 7), w.reshape(B * O, I, 3, 3), padding=1, groups=B)
    assert torch.allclose(modulated_conv2d(x, weight, styles), expected.reshape(B, O, 7, 7), atol=1e-5)


def test_equalized_lr_scales_at_run_time_and_stores_unit_weights_over_lr_mul():
    torch.manual_seed(0)
    layer = EqualLinear(256, 64, lr_mul=0.01)
    assert layer.weight_gain == pytest.approx(0.01 / math.sqrt(256))
    assert layer.weight.std().item() == pytest.approx(1 / 0.01, rel=0.05)  # 16,384 draws
    with torch.no_grad():
        layer.bias.fill_(3.0)
    x = torch.randn(5, 256)
    expected = x @ (layer.weight * 0.01 / 16).t() + 3.0 * 0.01  # bias also times lr_mul
    assert torch.allclose(layer(x), expected, atol=1e-5)

    conv = EqualConv2d(16, 32, 3)
    assert conv.weight_gain == pytest.approx(1 / math.sqrt(16 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.1)


def test_equalized_linear_keeps_unit_variance():
    torch.manual_seed(0)
    out = EqualLinear(512, 512)(torch.randn(256, 512))
    assert out.var().item() == pytest.approx(1.0, abs=0.1)


def test_fir_filter_is_normalized_and_resampling_keeps_a_constant():
    assert sum(FIR) == pytest.approx(1.0)
    const = torch.full((2, 3, 8, 8), 0.7)
    up = upsample2d(const)
    assert up.shape == (2, 3, 16, 16)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7))  # borders see zero pad
    down = downsample2d(const)
    assert down.shape == (2, 3, 4, 4)
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 0.7))


def test_fir_upsample_of_an_impulse_is_the_outer_product_of_the_filter():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    taps = 2 * torch.tensor(FIR)  # gain 4 split over the two axes
    expected = torch.zeros(8, 8)
    expected[1:5, 1:5] = taps[:, None] * taps[None, :]
    assert torch.allclose(upsample2d(x)[0, 0], expected)


def mbstd_by_hand(x: torch.Tensor, group: int, maps: int) -> torch.Tensor:
    B, C = x.shape[:2]
    n = B // group
    stds = torch.empty(B, maps)
    for b in range(B):
        members = x[b % n :: n].double()  # the group holding sample b
        for f in range(maps):
            part = members[:, f * C // maps : (f + 1) * C // maps]
            stds[b, f] = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    return stds


@pytest.mark.parametrize(
    ("batch", "group", "maps", "used_group"), [(4, 2, 1, 2), (8, 4, 2, 4), (6, 4, 1, 3), (5, 4, 1, 1)]
)
def test_minibatch_std_appends_the_group_std(batch, group, maps, used_group):
    torch.manual_seed(0)
    x = torch.randn(batch, 4, 3, 3)
    out = minibatch_std(x, group, maps)
    assert out.shape == (batch, 4 + maps, 3, 3)
    assert torch.equal(out[:, :4], x)
    appended = out[:, 4:]
    assert torch.equal(appended, appended[:, :, :1, :1].expand_as(appended))  # constant over pixels
    assert torch.allclose(appended[:, :, 0, 0], mbstd_by_hand(x, used_group, maps).float(), atol=1e-5)


# --- generator behaviour ---------------------------------------------------------------------


def test_truncation_psi_zero_gives_one_image_for_every_z():
    G = Generator(tiny()).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        images = G(torch.randn(4, 16), truncation_psi=0.0, noise_mode="const")
        at_w_avg = G.synthesis(G.mapping.w_avg.expand(1, G.num_ws, -1), noise_mode="const")
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    assert torch.allclose(images[:1], at_w_avg, atol=1e-6)


def test_w_avg_moves_towards_the_batch_mean_of_w_in_training_only():
    G = Generator(tiny())
    z = torch.randn(8, 16)
    with torch.no_grad():
        G.eval()
        w = G.mapping(z)[:, 0]
        assert torch.equal(G.mapping.w_avg, torch.zeros(16))  # eval leaves it alone
        G.train()
        G.mapping(z)
    assert torch.allclose(G.mapping.w_avg, (1 - 0.995) * w.mean(dim=0), atol=1e-6)


def test_style_mixing_swaps_the_later_layers_only():
    G = Generator(tiny(style_mixing=1.0)).train()
    ws = torch.zeros(64, G.num_ws, 16)
    mixed = G.mix_styles(ws, None, seeded())
    changed = (mixed != 0).any(dim=2)  # (B, num_ws)
    assert not changed[:, 0].any()  # the cutoff is at least 1
    assert changed.any(dim=1).all()  # every sample mixed at probability 1
    assert torch.equal(changed, changed.cummax(dim=1).values)  # once mixed, every later layer too
    G.cfg.style_mixing = 0.0  # then a training forward is mapping -> synthesis and nothing else
    z = torch.randn(2, 16)
    assert torch.equal(G(z, generator=seeded(1)), G.synthesis(G.mapping(z), generator=seeded(1)))


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_shapes(resolution, channels, num_classes):
    cfg = tiny(resolution, channels, num_classes, width=2, max_width=8)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    assert list(widths(cfg)) == [2**k for k in range(2, int(math.log2(resolution)) + 1)]
    labels = torch.tensor([0, 4]) if num_classes else None
    with torch.no_grad():
        images = G(torch.randn(2, 16), labels)
        logits = D(images, labels)
    assert images.shape == (2, channels, resolution, resolution) and images.dtype == torch.float32
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_conditioning_changes_both_networks_outputs():
    cfg = tiny(num_classes=3)
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    z, x = torch.randn(2, 16), torch.randn(2, 1, 16, 16)
    zeros, ones = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(D(x, zeros), D(x, ones))
        assert not torch.allclose(G(z, zeros, noise_mode="const"), G(z, ones, noise_mode="const"))
    with pytest.raises(GenforgeError, match="pass labels"):
        D(x)


def test_noise_modes():
    G = Generator(tiny()).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)  # noise starts switched off; turn it on to see it
        z = torch.randn(2, 16)
        assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
        assert not torch.equal(G(z, noise_mode="const"), G(z, noise_mode="none"))
        assert not torch.equal(G(z), G(z))  # fresh random noise each call
        assert torch.equal(G(z, generator=seeded(3)), G(z, generator=seeded(3)))
    with pytest.raises(GenforgeError, match="noise_mode"):
        G(z, noise_mode="fixed")


def test_every_parameter_gets_a_gradient():
    """No parameter is exempt: noise strengths start at 0 but their gradient is the noise itself."""
    cfg = tiny(num_classes=3)
    G, D = Generator(cfg).train(), Discriminator(cfg)
    labels = torch.tensor([0, 1, 2, 1])
    D(G(torch.randn(4, 16), labels, generator=seeded()), labels).sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_few_adam_steps_reduce_simple_losses():
    torch.manual_seed(0)
    cfg = tiny()
    D = Discriminator(cfg)
    real, fake = 0.5 + 0.1 * torch.randn(8, 1, 16, 16), -0.5 + 0.1 * torch.randn(8, 1, 16, 16)
    opt = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.0, 0.99))
    losses = []
    for _ in range(10):
        loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]

    G = Generator(cfg).eval()  # no style mixing, and no noise below: a fixed objective
    z, target = torch.randn(8, 16), torch.full((8, 1, 16, 16), 0.5)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.0, 0.99))
    losses = []
    for _ in range(10):
        loss = (G(z, noise_mode="none") - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_bf16_autocast_on_cpu_gives_finite_outputs():
    cfg = tiny(channels=3, num_classes=2)
    G, D = Generator(cfg).train(), Discriminator(cfg)
    labels = torch.tensor([0, 1, 1])  # 3 is not a multiple of the mbstd group of 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = G(torch.randn(3, 16), labels, generator=seeded())
        logits = D(images, labels)
        logits.sum().backward()
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters())


def test_seeded_generator_makes_training_forward_reproducible():
    G = Generator(tiny()).train()  # style mixing and random noise both draw from the generator
    z = torch.randn(4, 16)
    first = G(z, generator=seeded(7))
    assert torch.equal(first, G(z, generator=seeded(7)))
    assert not torch.equal(first, G(z, generator=seeded(8)))


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    cfg = tiny(num_classes=2)
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    save_file(G.state_dict(), tmp_path / "g.safetensors")  # refuses shared tensors
    save_file(D.state_dict(), tmp_path / "d.safetensors")
    G2, D2 = Generator(cfg).eval(), Discriminator(cfg)
    G2.load_state_dict(load_file(tmp_path / "g.safetensors"), strict=True)
    D2.load_state_dict(load_file(tmp_path / "d.safetensors"), strict=True)
    z, labels = torch.randn(2, 16), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(G(z, labels, noise_mode="const"), G2(z, labels, noise_mode="const"))
        x = torch.randn(2, 1, 16, 16)
        assert torch.equal(D(x, labels), D2(x, labels))


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("resolution", 48, "power of two"),
        ("resolution", 4, "8, 16, 32"),
        ("resolution", 2048, "1024"),
        ("channels", 2, "1 or 3"),
        ("style_mixing", 1.5, "probability"),
        ("width", 0, "positive"),
        ("mbstd_channels", 3, "divide"),
    ],
)
def test_config_errors_name_the_field(field, value, words):
    with pytest.raises(ConfigError, match=words) as caught:
        tiny(**{field: value})
    assert caught.value.key == field
    assert isinstance(caught.value, GenforgeError)


def test_building_without_resolution_or_channels_is_an_error():
    with pytest.raises(GenforgeError, match="resolution and channels"):
        Generator(StyleGAN2Config())
