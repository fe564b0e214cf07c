"""Discriminator augmentation: each op against its closed form, p = 0 is the identity, per-image
probability, gradients, seeded determinism; ADA's update rule, clamping, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from genforge.augment import (
    AUGMENTS,
    AdaptiveAugment,
    augment,
    brightness,
    contrast,
    cut_out,
    random_color,
    random_cutout,
    random_translation,
    saturation,
    translate,
)
from genforge.errors import GenforgeError


def seeded(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch=8, channels=3, side=32, seed=0) -> torch.Tensor:
    return torch.rand(batch, channels, side, side, generator=seeded(seed)) * 2 - 1  # in [-1, 1]


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x's content moved dy down and dx right, zero fill: the definition, by slicing."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    if abs(dy) >= H or abs(dx) >= W:
        return out
    out[..., max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = x[
        ..., max(-dy, 0) : H - max(dy, 0), max(-dx, 0) : W - max(dx, 0)
    ]
    return out


# --- identity and choices --------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, torch.tensor(0.0)])
def test_p_zero_is_the_identity(p):
    x = images()
    assert torch.equal(augment(x, p=p, generator=seeded()), x)


def test_every_op_is_listed_and_unknown_names_are_refused():
    assert list(AUGMENTS) == ["color", "translation", "cutout"]
    with pytest.raises(GenforgeError, match="unknown augmentation 'flip': choose from color, translation, cutout"):
        augment(images(), ops=("flip",))


# --- closed forms ------------------------------------------------------------------------------


def test_brightness_shifts_every_pixel_of_a_sample_by_the_same_amount():
    x, shift = images(), torch.linspace(-0.5, 0.5, 8)
    delta = brightness(x, shift) - x
    assert torch.allclose(delta, shift.reshape(-1, 1, 1, 1).expand_as(x), atol=1e-6)


def test_saturation_leaves_grey_unchanged_and_scales_colour_around_the_pixel_mean():
    grey = images(channels=1).expand(-1, 3, -1, -1)  # equal channels
    factor = torch.linspace(0, 2, 8)
    assert torch.allclose(saturation(grey, factor), grey, atol=1e-6)
    x = images()
    mean = x.mean(dim=1, keepdim=True)
    out = saturation(x, factor)
    assert torch.allclose(out.mean(dim=1, keepdim=True), mean, atol=1e-6)
    assert torch.allclose(out - mean, (x - mean) * factor.reshape(-1, 1, 1, 1), atol=1e-6)


def test_contrast_keeps_the_image_mean_and_scales_departures_from_it():
    x, factor = images(), torch.linspace(0.5, 1.5, 8)
    out = contrast(x, factor)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-6)
    assert torch.allclose(out - mean, (x - mean) * factor.reshape(-1, 1, 1, 1), atol=1e-6)


def test_random_color_on_grey_images_is_an_affine_map_per_image():
    """Saturation leaves grey alone, so colour = contrast(brightness(x)): out = a * x + b per image,
    with a = contrast factor in [0.5, 1.5] and the mean moved by the brightness shift in [-0.5, 0.5]."""
    grey = images(batch=64, channels=1).expand(-1, 3, -1, -1)
    out = random_color(grey, generator=seeded())
    xs, ys = grey.flatten(1), out.flatten(1)
    xc, yc = xs - xs.mean(1, keepdim=True), ys - ys.mean(1, keepdim=True)
    slope = (xc * yc).sum(1) / xc.square().sum(1)
    assert torch.allclose(yc, slope[:, None] * xc, atol=1e-5)  # exactly affine
    assert ((slope >= 0.5) & (slope <= 1.5)).all()
    mean_shift = ys.mean(1) - xs.mean(1)
    assert ((mean_shift >= -0.5) & (mean_shift <= 0.5)).all()
    assert mean_shift.std() > 0.1  # drawn per image, not once per batch


def test_translate_moves_content_by_whole_pixels_with_zero_fill():
    x = images(batch=3)
    dy, dx = torch.tensor([1, -3, 40]), torch.tensor([-2, 0, 5])  # a shift past the border empties the image
    out = translate(x, dy, dx)
    for b in range(3):
        assert torch.equal(out[b], shifted(x[b], int(dy[b]), int(dx[b])))


def test_random_translation_is_a_whole_pixel_shift_within_an_eighth_of_the_side():
    x = images(batch=32)
    out = random_translation(x, generator=seeded())
    found = []
    for b in range(32):
        matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if torch.equal(out[b], shifted(x[b], dy, dx))]
        assert len(matches) == 1, b  # exactly one shift of at most 32 / 8 = 4 pixels explains it
        found.append(matches[0])
    assert len(set(found)) > 10  # drawn per image


def test_cut_out_zeroes_a_square_clipped_by_the_border():
    x = torch.ones(2, 1, 8, 8)
    out = cut_out(x, torch.tensor([2, -2]), torch.tensor([1, 6]), 4)
    expected = torch.ones(2, 1, 8, 8)
    expected[0, :, 2:6, 1:5] = 0
    expected[1, :, 0:2, 6:8] = 0
    assert torch.equal(out, expected)


def test_random_cutout_zeroes_about_a_quarter_of_the_area():
    side, size = 32, 16
    out = random_cutout(torch.ones(2000, 1, side, side), generator=seeded())
    zeroed = (out == 0).float().mean(dim=(1, 2, 3))  # (B,) fraction of each image cut out
    assert (zeroed > 0).all() and (zeroed <= 0.25).all()
    # Expected fraction, by enumerating DiffAugment's centres 0..side: rows kept from the square.
    rows = torch.tensor([min(c + size // 2, side) - max(c - size // 2, 0) for c in range(side + 1)]).float()
    expected = (rows.mean() / side) ** 2  # about 0.187
    assert zeroed.mean().item() == pytest.approx(expected.item(), abs=0.01)
    boxes = out[:, 0] == 0
    rows_hit, cols_hit = boxes.any(dim=2), boxes.any(dim=1)
    assert torch.equal(boxes, rows_hit[:, :, None] & cols_hit[:, None, :])  # one axis-aligned rectangle


# --- probability, gradients, determinism -------------------------------------------------------


@pytest.mark.parametrize(("name", "fraction"), [("color", 0.5), ("translation", 0.5 * 80 / 81), ("cutout", 0.5)])
def test_p_half_changes_about_half_of_a_large_batch(name, fraction):
    # translation: 1 draw in 81 is the zero shift, which changes nothing
    x = images(batch=1000, side=16)
    out = augment(x, ops=(name,), p=0.5, generator=seeded())
    changed = (out != x).flatten(1).any(dim=1).float().mean().item()
    assert changed == pytest.approx(fraction, abs=0.05)  # 3 standard errors


def test_a_tensor_p_acts_as_the_same_float():
    x = images(batch=16)
    assert torch.equal(augment(x, p=0.3, generator=seeded()), augment(x, p=torch.tensor(0.3), generator=seeded()))


@pytest.mark.parametrize("name", ["color", "translation", "cutout"])
def test_gradients_flow_to_the_input_through_every_op(name):
    x = images(batch=2, side=8).double().requires_grad_()
    # The same seed on every call, so gradcheck's perturbed calls see the same random draws.
    assert torch.autograd.gradcheck(lambda t: augment(t, ops=(name,), generator=seeded()), (x,))
    augment(x, ops=(name,), generator=seeded()).sum().backward()
    assert x.grad.abs().sum() > 0


def test_same_seed_same_output():
    x = images()
    assert torch.equal(augment(x, generator=seeded(1)), augment(x, generator=seeded(1)))
    assert not torch.equal(augment(x, generator=seeded(1)), augment(x, generator=seeded(2)))


# --- ADA ---------------------------------------------------------------------------------------

BATCH, INTERVAL, SPEED = 64, 4, 500_000
DELTA = BATCH * INTERVAL / SPEED


def run(ada: AdaptiveAugment, logits: torch.Tensor, steps: int) -> list:
    results = []
    for _ in range(steps):
        ada.observe(logits)
        results.append(ada.update(BATCH))
    return results


def test_all_positive_real_logits_raise_p_by_batch_interval_over_speed_per_update():
    ada = AdaptiveAugment(interval=INTERVAL, speed=SPEED)
    results = run(ada, torch.ones(BATCH), 3)
    assert results == [None, None, None] and ada.p == 0.0  # no change between updates
    assert run(ada, torch.ones(BATCH), 1) == [1.0]  # r_t = E[sign] = 1
    assert ada.p == pytest.approx(DELTA, rel=1e-12)
    run(ada, torch.ones(BATCH), 4 * INTERVAL)
    assert ada.p == pytest.approx(5 * DELTA, rel=1e-12)


def test_all_negative_real_logits_lower_p():
    ada = AdaptiveAugment(interval=INTERVAL, speed=SPEED, p=0.5)
    assert run(ada, -torch.ones(BATCH), 2 * INTERVAL)[-1] == -1.0
    assert ada.p == pytest.approx(0.5 - 2 * DELTA, rel=1e-12)


def test_p_is_clamped_to_zero_and_one():
    low = AdaptiveAugment(interval=INTERVAL, speed=SPEED, p=DELTA / 2)
    run(low, -torch.ones(BATCH), INTERVAL)
    assert low.p == 0.0
    high = AdaptiveAugment(interval=INTERVAL, speed=SPEED, p=1 - DELTA / 2)
    run(high, torch.ones(BATCH), INTERVAL)
    assert high.p == 1.0


def test_r_t_at_the_target_leaves_p_alone():
    ada = AdaptiveAugment(target=0.5, interval=1, p=0.3)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # E[sign] = 0.5
    assert ada.update(BATCH) == 0.5 and ada.p == 0.3


def test_resume_from_state_and_tensors_matches_an_uninterrupted_run(tmp_path):
    logits = torch.randn(20, BATCH, generator=seeded()) + 0.85  # E[sign] = 0.605: r_t wanders around 0.6
    speed = 5_000  # fast, so p moves visibly
    whole = AdaptiveAugment(interval=INTERVAL, speed=speed, p=0.5)
    first = AdaptiveAugment(interval=INTERVAL, speed=speed, p=0.5)
    for step in range(6):  # stop mid-interval, with observations pending on the device
        for ada in (whole, first):
            ada.observe(logits[step])
            ada.update(BATCH)
    save_file(first.tensors(), tmp_path / "ada.safetensors")
    (tmp_path / "ada.json").write_text(json.dumps(first.state()))

    resumed = AdaptiveAugment(interval=INTERVAL, speed=speed)  # p comes from the checkpoint
    resumed.load(load_file(tmp_path / "ada.safetensors"), json.loads((tmp_path / "ada.json").read_text()))
    for step in range(6, 20):
        for ada in (whole, resumed):
            ada.observe(logits[step])
        assert whole.update(BATCH) == resumed.update(BATCH)
        assert whole.state() == resumed.state()
    assert whole.p != 0.5


def test_load_refuses_missing_or_extra_keys():
    ada = AdaptiveAugment()
    with pytest.raises(GenforgeError, match="expected tensors"):
        ada.load({}, ada.state())
    with pytest.raises(GenforgeError, match="expected tensors"):
        ada.load(ada.tensors(), {**ada.state(), "extra": 1})


def test_bad_settings_are_refused():
    with pytest.raises(GenforgeError, match="target"):
        AdaptiveAugment(target=1.5)
    with pytest.raises(GenforgeError, match="interval"):
        AdaptiveAugment(interval=0)
