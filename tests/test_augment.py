"""Discriminator augmentation: each op (DiffAugment's and ADA's pipeline) against its closed form,
p = 0 is the identity, per-image probability, gradients, seeded determinism, draws independent of
p, a rank's share of the draws; ADA's update rule, clamping, and exact resume; old ADA runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from genforge import checkpoint as ckpt
from genforge import families
from genforge.augment import (
    AUGMENTS,
    AdaptiveAugment,
    ada_augment,
    ada_parameters,
    augment,
    brightness,
    color_matrix,
    contrast,
    cut_out,
    random_color,
    random_cutout,
    random_translation,
    recolor,
    rotate2d,
    saturation,
    scale2d,
    translate,
    translate2d,
    warp,
)
from genforge.config import resolve
from genforge.draws import Share
from genforge.errors import GenforgeError
from genforge.families.gan import fit_to_data, migrate
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer
from synthetic import COMMON, TINY_GAN, cli, one_error, sets, train, write_npz


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


def test_p_stops_at_zero_but_not_at_one_as_the_reference():
    low = AdaptiveAugment(interval=INTERVAL, speed=SPEED, p=DELTA / 2)
    run(low, -torch.ones(BATCH), INTERVAL)
    assert low.p == 0.0
    high = AdaptiveAugment(interval=INTERVAL, speed=SPEED, p=1 - DELTA / 2)
    run(high, torch.ones(BATCH), 2 * INTERVAL)
    assert high.p == pytest.approx(1 + 1.5 * DELTA, rel=1e-12)


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


# --- ADA's pipeline: the geometric ops, as warps --------------------------------------------------

ONES = torch.ones(3)


def symmetric_shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x's content moved dy down and dx right, the border mirrored about the outer pixel edges."""
    H, W = x.shape[-2:]
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (H, H), (W, W)), mode="symmetric")
    return torch.from_numpy(padded[:, :, H - dy : 2 * H - dy, W - dx : 2 * W - dx].copy())


def test_warp_by_a_flip_quarter_turns_and_whole_pixel_shifts_is_exact():
    x = images(batch=3, side=8)
    assert torch.equal(warp(x, scale2d(-ONES, ONES)), x.flip(3))  # xflip's inverse is itself
    for turns in range(4):  # the pipeline's inverse for i quarter turns
        turned = warp(x, rotate2d(math.pi / 2 * turns * ONES))
        torch.testing.assert_close(turned, torch.rot90(x, turns, dims=(2, 3)), rtol=0, atol=1e-5)
    for dy, dx in ((0, 2), (-3, 1), (5, -7)):  # content moves by t: the inverse moves by -t
        moved = warp(x, translate2d(-dx * ONES, -dy * ONES))
        torch.testing.assert_close(moved, symmetric_shift(x, dy, dx), rtol=0, atol=1e-5)


def test_warp_scales_about_the_image_centre():
    """Magnifying x2 about the centre: output pixel j samples input (j - c) / 2 + c, c = (W - 1) / 2."""
    x = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()  # each column its index
    out = warp(x, scale2d(torch.tensor([0.5]), torch.tensor([0.5])))
    expected = (torch.arange(8.0) - 3.5) / 2 + 3.5  # bilinear in a linear ramp: exact
    torch.testing.assert_close(out[0, 0], expected.expand(8, 8))


# --- ADA's pipeline: the colour ops, as matrices ---------------------------------------------------


def colour_values(batch=3, **given) -> dict[str, torch.Tensor]:
    neutral = {"brightness": 0.0, "contrast": 1.0, "lumaflip": 0.0, "hue": 0.0, "saturation": 1.0}
    return {k: torch.full((batch,), float(given.get(k, v))) for k, v in neutral.items()}


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_then_contrast(channels):
    x = images(batch=3, channels=channels)
    out = recolor(x, color_matrix(colour_values(brightness=0.3, contrast=1.5), channels))
    torch.testing.assert_close(out, (x + 0.3) * 1.5)  # contrast about 0, mid-grey, after brightness


def test_luma_flip_reflects_through_the_plane_normal_to_grey_and_negates_grey():
    x = images(batch=3)
    out = recolor(x, color_matrix(colour_values(lumaflip=1), 3))
    torch.testing.assert_close(out, x - 2 * x.mean(dim=1, keepdim=True))
    grey = images(batch=3, channels=1)
    torch.testing.assert_close(recolor(grey, color_matrix(colour_values(lumaflip=1), 1)), -grey)


def test_hue_turns_about_grey_a_third_of_a_turn_permutes_the_channels():
    x = images(batch=3)
    out = recolor(x, color_matrix(colour_values(hue=2 * math.pi / 3), 3))
    torch.testing.assert_close(out, x[:, [2, 0, 1]], rtol=0, atol=1e-5)  # red -> green -> blue -> red
    quarter = recolor(x, color_matrix(colour_values(hue=math.pi / 2), 3))
    torch.testing.assert_close(quarter.mean(dim=1), x.mean(dim=1))  # grey level kept
    torch.testing.assert_close(quarter.square().sum(dim=1), x.square().sum(dim=1))  # a rotation


def test_saturation_scales_the_departure_from_grey():
    x = images(batch=3)
    mean = x.mean(dim=1, keepdim=True)
    out = recolor(x, color_matrix(colour_values(saturation=0.25), 3))
    torch.testing.assert_close(out, mean + 0.25 * (x - mean))


def test_grey_images_skip_hue_and_saturation_as_if_they_were_grey_rgb():
    grey = images(batch=3, channels=1)
    values = colour_values(brightness=-0.2, contrast=0.7, lumaflip=1, hue=1.0, saturation=3.0)
    as_rgb = recolor(grey.expand(-1, 3, -1, -1), color_matrix(values, 3))
    torch.testing.assert_close(recolor(grey, color_matrix(values, 1)), as_rgb.mean(dim=1, keepdim=True))
    torch.testing.assert_close(recolor(grey, color_matrix(values, 1)), -(grey - 0.2) * 0.7)


def test_ada_pipeline_refuses_images_that_are_neither_grey_nor_rgb():
    with pytest.raises(GenforgeError, match="1 \\(grey\\) or 3 \\(RGB\\) channels, got 2"):
        ada_augment(images(channels=2), p=1.0, generator=seeded())


# --- ADA's pipeline: probabilities, strengths, draws -----------------------------------------------


def test_each_op_is_applied_to_each_image_with_probability_p_at_the_reference_strengths():
    n, p = 20_000, 0.5
    values = ada_parameters(torch.rand(n, 21, generator=seeded()), torch.randn(n, 7, generator=seeded(1)), p, (32, 32))
    neutral = {"xflip": 0, "rotate90": 0, "scale": 1, "aniso": 1, "brightness": 0, "contrast": 1, "lumaflip": 0,
               "hue": 0, "saturation": 1}  # fmt: skip
    # flips and luma flips pick 0 or 1 (quarter turns 0..3) when applied: a half (a quarter) stay neutral
    share_changed = {"xflip": p / 2, "lumaflip": p / 2, "rotate90": p * 3 / 4}
    for name, value in neutral.items():
        changed = (values[name] != value).float().mean().item()
        assert changed == pytest.approx(share_changed.get(name, p), abs=0.02), name
    either = (values["pre_rotate"] != 0) | (values["post_rotate"] != 0)
    assert either.float().mean().item() == pytest.approx(p, abs=0.02)  # two rotations, p together
    shifted_by = values["xint"][0][values["xint"][0] != 0]
    assert shifted_by.abs().max() == 4 and torch.equal(shifted_by, shifted_by.round())  # 0.125 * 32 pixels
    log2 = {"scale": 0.2, "aniso": 0.2, "contrast": 0.5, "saturation": 1.0}
    for name, std in log2.items():
        applied = values[name][values[name] != 1]
        assert torch.log2(applied).std().item() == pytest.approx(std, rel=0.05), name
    b = values["brightness"][values["brightness"] != 0]
    assert b.std().item() == pytest.approx(0.2, rel=0.05)
    frac = values["xfrac"][0][values["xfrac"][0] != 0]
    assert frac.std().item() == pytest.approx(0.125 * 32, rel=0.05)
    hue = values["hue"][values["hue"] != 0]
    assert hue.abs().max() <= math.pi and hue.abs().max() > 0.99 * math.pi  # a full turn either way


def test_ada_pipeline_changes_about_the_expected_share_of_images():
    x = images(batch=4000, side=16)
    for p in (0.1, 0.3):
        changed = (ada_augment(x, p, seeded()) != x).flatten(1).any(dim=1).float().mean().item()
        # An image is left alone when every op's coin fails or it lands on the op's neutral value:
        # 8 ops (scale, aniso, xfrac, brightness, contrast, hue, saturation, and the two rotations
        # together) change it whenever applied; a whole-pixel shift of 16 / 8 pixels rounds to (0, 0)
        # with probability 1/16; flips and luma flips pick 0 or 1, quarter turns 0..3.
        kept = (1 - p) ** 8 * (1 - p * 15 / 16) * (1 - p / 2) ** 2 * (1 - 3 * p / 4)
        assert changed == pytest.approx(1 - kept, abs=0.03)  # 4 standard errors


@pytest.mark.parametrize("p", [0.0, torch.tensor(0.0)])
@pytest.mark.parametrize("channels", [1, 3])
def test_ada_pipeline_at_p_zero_is_the_identity(p, channels):
    x = images(channels=channels)
    assert torch.equal(ada_augment(x, p, seeded()), x)


def test_ada_pipeline_draws_the_same_whatever_p_is():
    x = images()
    states = []
    for p in (0.0, 0.4, 1.0, 1.7):
        g = seeded()
        ada_augment(x, p, g)
        states.append(g.get_state())
    assert all(torch.equal(states[0], s) for s in states[1:])
    assert not torch.equal(states[0], seeded().get_state())  # it did draw


def test_ada_pipeline_same_seed_same_output_and_p_above_one_acts_as_one():
    x = images()
    assert torch.equal(ada_augment(x, 0.7, seeded(1)), ada_augment(x, 0.7, seeded(1)))
    assert not torch.equal(ada_augment(x, 0.7, seeded(1)), ada_augment(x, 0.7, seeded(2)))
    assert torch.equal(ada_augment(x, 1.0, seeded(1)), ada_augment(x, 1.6, seeded(1)))


@pytest.mark.parametrize("channels", [1, 3])
def test_ada_pipeline_is_differentiable_in_the_image_twice(channels):
    x = images(batch=2, channels=channels, side=4).double().requires_grad_()
    op = lambda t: ada_augment(t, 1.0, seeded(3))
    assert torch.autograd.gradcheck(op, (x,))
    # R1 through the augmentation differentiates the image's gradient again
    assert torch.autograd.gradgradcheck(op, (x,))


def test_a_rank_share_of_the_draws_is_its_rows_of_the_one_process_draw():
    """Two ranks with half the batch each, drawing through a Share of equal generators, augment
    exactly as one process with the whole batch; their generators stay equal."""
    x = images(batch=8)
    whole_g = seeded(4)
    whole = ada_augment(x, 0.6, whole_g)
    diff = augment(x, p=0.6, generator=whole_g)
    halves, diffs, states = [], [], []
    for rank in range(2):
        share = Share(seeded(4), rank, 2)
        halves.append(ada_augment(x[4 * rank : 4 * rank + 4], 0.6, share))
        diffs.append(augment(x[4 * rank : 4 * rank + 4], p=0.6, generator=share))
        states.append(share.generator.get_state())
    assert torch.equal(torch.cat(halves), whole) and torch.equal(torch.cat(diffs), diff)
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], whole_g.get_state())


# --- choosing the pipeline; runs from before it ----------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "pipeline", "ada_ops"),
    [
        ("ada", "auto", True),
        ("ada", "diffaugment", False),
        ("diffaugment", "auto", False),
        ("diffaugment", "ada", True),
    ],
)
def test_the_trainer_augments_with_the_pipeline_its_config_names(policy, pipeline, ada_ops):
    values = [*TINY_GAN, "model.z_dim=16", f"augment.policy={policy}", f"augment.pipeline={pipeline}", "augment.p=0.5"]
    cfg = fit_to_data(resolve(GANRunConfig, GAN_PRESETS, "default", None, values), 32, 3)
    trainer = GANTrainer(cfg, torch.device("cpu"))
    x = images()
    expected = (
        ada_augment(x, 0.5, seeded(cfg.train.seed)) if ada_ops else augment(x, p=0.5, generator=seeded(cfg.train.seed))
    )
    assert torch.equal(trainer._augment(x), expected)


def test_migrate_gives_old_ada_configs_diffaugments_ops_and_leaves_the_rest():
    old = {"augment": {"policy": "ada", "p": 0.0}}
    # (runs stored before augment.mirror trained without flips: migrate says so too)
    assert migrate(old)["augment"] == {"policy": "ada", "p": 0.0, "pipeline": "diffaugment", "mirror": False}
    for config in (
        {"augment": {"policy": "diffaugment", "mirror": True}},
        {"augment": {"policy": "ada", "pipeline": "ada", "mirror": None}},
    ):
        assert migrate(config).get("augment") == config.get("augment")
    # StyleGAN2's runs (ADA by default) alike, through its own migration
    assert families.get("stylegan2").migrate(old)["augment"] == migrate(old)["augment"]


def test_old_ada_runs_keep_diffaugments_ops_and_say_so_on_resume(tmp_path):
    data = write_npz(tmp_path / "data.npz", n=64)
    settings = ["model.z_dim=16", "augment.policy=ada", "augment.p=0.5", "train.checkpoint_every=2"]
    run = train("gan", tmp_path / "run", data=data, steps=2, extra=settings)
    assert ckpt.load(run).config["augment"]["pipeline"] == "auto"
    meta_path = ckpt.find(run) / ckpt.META
    meta = json.loads(meta_path.read_text())
    meta["config"]["augment"].pop("pipeline")  # as written before ADA's own pipeline
    meta_path.write_text(json.dumps(meta))
    (run / "config.yaml").unlink()

    args = ["train", "gan", "--out", run, "--data", data, "--steps", 4, "--device", "cpu", "--quiet"]
    code, _, err = cli(*args, *sets(COMMON, TINY_GAN, settings))
    assert code == 2 and "augment.pipeline='diffaugment'" in one_error(err)
    train("gan", run, data=data, steps=4, extra=[*settings, "augment.pipeline=diffaugment"])
    assert ckpt.load(run).step == 4
