"""StyleGAN2 trained as stylegan2-ada-pytorch trains it: path length regularisation against a
direct computation, R1 through the augmentation, lazy regularisation as steps of their own with
Adam's rate and betas shrunk, the EMA counted in images, fp32 demodulation under autocast,
in-training samples with constant noise, presets and the `auto` sizes, and old runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genforge import checkpoint as ckpt
from genforge.config import ConfigError, resolve
from genforge.errors import GenforgeError
from genforge.families.gan import fit_to_data
from genforge.families.gan_config import GAN_PRESETS, GANRunConfig
from genforge.families.gan_trainer import GANTrainer
from genforge.families.registry import Prepared
from genforge.families.stylegan2 import (
    SAMPLE_OPTIONS,
    SPEC,
    STYLEGAN2_PRESETS,
    StyleGAN2RunConfig,
    apply_scale,
    auto_spec,
    networks,
)
from genforge.losses import path_length_penalty, r1_penalty
from genforge.models.stylegan2 import Generator, StyleGAN2Config, demodulation, modulated_conv2d, widths
from synthetic import COMMON, cli, one_error, sets, write_npz

TINY = ["model.z_dim=16", "model.w_dim=16", "model.width=4", "model.max_width=16", "train.batch_size=8"]


def trainer(*values: str, resolution: int = 16) -> GANTrainer:
    cfg = resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "cpu", None, [*TINY, "train.precision=fp32", *values])
    return GANTrainer(fit_to_data(cfg, resolution, 1), torch.device("cpu"), networks=networks)


def batch(n: int = 8, resolution: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --- path length regularisation --------------------------------------------------------------


def test_path_length_penalty_on_a_linear_synthesis_is_its_closed_form():
    """images = ws (flattened) @ M: the gradient of sum(images * noise) is noise @ M^T, in closed form;
    the penalty's value and its gradient in M (through the running mean too) agree with it."""
    torch.manual_seed(0)
    B, L, D, C, H, W = 3, 4, 5, 2, 3, 3
    M = torch.randn(L * D, C * H * W, requires_grad=True)
    ws = torch.randn(B, L, D, requires_grad=True)
    noise = torch.randn(B, C, H, W) / math.sqrt(H * W)
    pl_mean, weight, decay = torch.tensor(0.7), 2.0, 0.01

    images = (ws.reshape(B, -1) @ M).reshape(B, C, H, W)
    total, parts = path_length_penalty(images, ws, noise, pl_mean, weight, decay)

    grads = (noise.reshape(B, -1) @ M.t()).reshape(B, L, D)  # d sum(images * noise) / d ws, by hand
    lengths = grads.square().sum(2).mean(1).sqrt()  # (B,)
    new_mean = 0.7 + decay * (lengths.mean() - 0.7)
    expected = weight * (lengths - new_mean).square().mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["pl_mean"].item() == pytest.approx(new_mean.item(), rel=1e-6)
    assert parts["pl_penalty"].item() == pytest.approx(expected.item() / weight, rel=1e-5)
    assert pl_mean.item() == pytest.approx(0.7)  # the caller stores the new mean, the function does not
    (got,) = torch.autograd.grad(total, M)
    (want,) = torch.autograd.grad(expected, M)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_path_length_penalty_of_a_stylegan2_synthesis_takes_each_samples_own_gradient():
    """On a tiny StyleGAN2 synthesis network (no noise: deterministic), one sample at a time by hand."""
    torch.manual_seed(0)
    G = Generator(StyleGAN2Config(z_dim=8, w_dim=8, width=4, max_width=8, resolution=8, channels=1))
    ws = G.mapping(torch.randn(3, 8)).detach().requires_grad_(True)  # (3, num_ws, 8)
    images = G.synthesis(ws, noise_mode="none")
    noise = torch.randn_like(images) / 8
    lengths = []
    for b in range(3):
        w_b = ws[b : b + 1].detach().requires_grad_(True)
        (g,) = torch.autograd.grad((G.synthesis(w_b, noise_mode="none") * noise[b : b + 1]).sum(), w_b)
        lengths.append(g.square().sum(2).mean(1).sqrt())
    lengths = torch.cat(lengths)
    total, parts = path_length_penalty(images, ws, noise, torch.zeros([]), 2.0, 0.01)
    assert parts["pl_mean"].item() == pytest.approx(0.01 * lengths.mean().item(), rel=1e-5)
    assert total.item() == pytest.approx(2.0 * (lengths - 0.01 * lengths.mean()).square().mean().item(), rel=1e-4)


def test_images_and_ws_are_the_training_forward():
    G = Generator(StyleGAN2Config(z_dim=8, w_dim=8, width=4, max_width=8, resolution=8, channels=1)).train()
    z = torch.randn(4, 8)
    images, ws = G.images_and_ws(z, generator=torch.Generator().manual_seed(3))
    assert ws.shape == (4, G.num_ws, 8)
    assert torch.equal(images, G(z, generator=torch.Generator().manual_seed(3)))


def test_path_length_runs_every_pl_interval_steps_as_a_g_step_of_its_own_and_resumes():
    family = trainer("optim.r1_gamma=0", "augment.policy=none")
    assert family.pl_separate and family.pl_mean is not None
    logged = [("pl_penalty" in family.train_step(batch(), None)) for _ in range(5)]
    assert logged == [True, False, False, False, True]  # steps 0 and 4 of pl_interval 4
    g_state = family.opt_g.state[next(iter(family.G.parameters()))]
    assert int(g_state["step"]) == 5 + 2  # five main steps, two regularisation steps
    assert family.pl_mean.item() > 0  # moved from 0 towards the lengths

    tensors, state = family.extra_state()
    assert torch.equal(tensors["pl_mean"], family.pl_mean)
    fresh = trainer("optim.r1_gamma=0", "augment.policy=none")
    fresh.load_extra_state({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(state)))
    assert torch.equal(fresh.pl_mean, family.pl_mean)


def test_path_length_every_step_is_folded_into_the_g_step():
    family = trainer("optim.r1_gamma=0", "augment.policy=none", "optim.pl_interval=1")
    assert not family.pl_separate
    assert all("pl_penalty" in family.train_step(batch(), None) for _ in range(2))
    assert int(family.opt_g.state[next(iter(family.G.parameters()))]["step"]) == 2


def test_a_dcgan_refuses_path_length_regularisation():
    with pytest.raises(GenforgeError, match="pl_weight .* needs a generator with a w space"):
        resolve(GANRunConfig, GAN_PRESETS, "default", None, ["optim.pl_weight=1"])


# --- R1 through the augmentation -------------------------------------------------------------


def test_r1_is_taken_against_the_real_before_augmentation():
    """A known augmentation (p = 1): x -> 3 * x mirrored. The gradient against the un-augmented
    real is 3 * the mirrored gradient of D at the augmented one."""
    family = trainer()
    family._augment = lambda t: 3 * t.flip(-1)
    x = batch(4)
    image, logits = family._eager_logits(x, None, augment_first=True)
    assert torch.equal(image, x) and image.requires_grad
    total, parts = r1_penalty(image, logits, gamma=2.0)

    seen = (3 * x.flip(-1)).requires_grad_(True)
    (at_seen,) = torch.autograd.grad(family.D(seen).sum(), seen)
    expected = (3 * at_seen.flip(-1)).square().flatten(1).sum(1).mean()
    assert parts["r1"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)  # gamma / 2 = 1
    # the penalty at the augmented image, which the trainer used to take, is 9 times smaller here
    assert parts["r1"].item() == pytest.approx(9 * at_seen.square().flatten(1).sum(1).mean().item(), rel=1e-5)


# --- lazy regularisation: its own steps, Adam shrunk -----------------------------------------


def test_lazy_regularisation_shrinks_adam_only_where_a_regularisation_step_exists():
    family = trainer()  # R1 every 16, path length every 4
    d, g = family.opt_d.param_groups[0], family.opt_g.param_groups[0]
    assert d["lr"] == pytest.approx(0.0025 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert g["lr"] == pytest.approx(0.0025 * 4 / 5) and g["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    plain = trainer("optim.r1_gamma=0", "optim.pl_weight=0")
    for group in (plain.opt_d.param_groups[0], plain.opt_g.param_groups[0]):
        assert group["lr"] == 0.0025 and group["betas"] == (0.0, 0.99)


@pytest.mark.parametrize(("interval", "d_steps"), [(1, 4), (2, 4 + 2)])
def test_r1_every_n_steps_is_a_d_step_of_its_own(interval, d_steps):
    family = trainer("optim.pl_weight=0", "optim.r1_gamma=1", f"optim.r1_interval={interval}")
    logs = [family.train_step(batch(), None) for _ in range(4)]
    assert all("r1" in log for log in logs[::interval])
    assert int(family.opt_d.state[next(iter(family.D.parameters()))]["step"]) == d_steps


def test_a_resumed_run_keeps_the_adam_settings_it_trained_with():
    """Adam's rate and betas live in the optimizer state: a checkpoint restores the shrunk ones."""
    before = trainer()
    saved = before.opt_d.state_dict()
    after = trainer("optim.r1_gamma=0")  # would not shrink
    after.opt_d.load_state_dict(saved)
    assert after.opt_d.param_groups[0]["lr"] == pytest.approx(0.0025 * 16 / 17)


# --- EMA in images -----------------------------------------------------------------------------


def test_ema_by_images_has_the_same_half_life_whatever_the_batch():
    small = trainer("optim.ema_kimg=1", "optim.ema_rampup=0", "train.batch_size=8")
    large = trainer("optim.ema_kimg=1", "optim.ema_rampup=0", "train.batch_size=16")
    small.steps_done, large.steps_done = 10, 10
    assert small.ema_step_decay() ** 2 == pytest.approx(large.ema_step_decay())  # per image: equal
    assert small.ema_step_decay() ** (1000 / 8) == pytest.approx(0.5)  # 1000 images halve the weight


def test_ema_ramp_up_caps_the_half_life_at_a_share_of_the_images_seen():
    family = trainer("optim.ema_kimg=10", "optim.ema_rampup=0.05", "train.batch_size=8")
    family.steps_done = 1  # nothing seen before the first step: G_ema copies G
    assert family.ema_step_decay() == 0.0
    family.steps_done = 101  # 800 images seen: half-life 40 images, not 10,000
    assert family.ema_step_decay() == pytest.approx(0.5 ** (8 / 40))
    ema_before = [p.clone() for p in family.G_ema.parameters()]
    with torch.no_grad():
        for p in family.G.parameters():
            p.add_(1.0)
    family._update_ema()
    beta = 0.5 ** (8 / 40)
    for old, new, g in zip(ema_before, family.G_ema.parameters(), family.G.parameters()):
        torch.testing.assert_close(new, g + beta * (old - g))


def test_ema_kimg_and_ema_decay_exclude_each_other():
    with pytest.raises(ConfigError, match="ema_kimg") as caught:
        resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "cpu", None, ["optim.ema_decay=0.999"])
    assert caught.value.key == "optim.ema_kimg"


# --- fp32 demodulation; in-training samples with constant noise ------------------------------


def test_demodulation_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    weight, styles = torch.randn(8, 64, 3, 3), torch.randn(4, 64).bfloat16()
    exact = (styles.double().square() @ weight.double().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coefficients = demodulation(weight, styles)
        out = modulated_conv2d(torch.randn(4, 64, 5, 5), weight, styles)
    assert coefficients.dtype == torch.float32
    torch.testing.assert_close(coefficients.double(), exact, rtol=1e-6, atol=0)
    assert torch.isfinite(out).all()


def test_in_training_samples_use_evaluates_constant_noise():
    family = SPEC.build(_prepared(), torch.device("cpu"), torch.float32)
    assert family.sample_options == SAMPLE_OPTIONS == {"noise_mode": "const"}
    with torch.no_grad():
        for name, p in family.G_ema.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)  # noise starts switched off; turn it on to see it
    first = family.evaluation_samples(4, torch.Generator().manual_seed(5))
    again = family.evaluation_samples(4, torch.Generator().manual_seed(5))
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        const = family.G_ema(z, noise_mode="const")
        random = family.G_ema(z, noise_mode="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and torch.equal(first, const)
    assert not torch.allclose(first, random)


def _prepared() -> Prepared:
    cfg = resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "cpu", None, [*TINY, "train.precision=fp32"])
    return Prepared(fit_to_data(cfg, 16, 1), None, None)


# --- presets and the auto sizes ----------------------------------------------------------------


def test_auto_spec_is_the_references_auto():
    """train.py, cfg 'auto': mb = max(min(gpus * min(4096 // res, 32), 64), gpus), mbstd = min(mb //
    gpus, 4), fmaps 1 from 512 up else 0.5, lrate 0.002 at 1024 else 0.0025, gamma = 0.0002 res^2 / mb,
    ema = mb * 10 / 32, ramp 0.05, map 2."""
    a = auto_spec(64, 1)
    assert a["train"]["batch_size"] == 32 and a["model"]["mbstd_group"] == 4
    assert a["model"]["channel_base"] == 16384 and a["model"]["mapping_layers"] == 2
    assert a["optim"]["r1_gamma"] == pytest.approx(0.0256) and a["optim"]["ema_kimg"] == pytest.approx(10)
    assert (a["optim"]["lr_g"], a["optim"]["ema_rampup"]) == (0.0025, 0.05)
    b = auto_spec(1024, 8)
    assert (b["train"]["batch_size"], b["model"]["mbstd_group"], b["model"]["channel_base"]) == (32, 4, 32768)
    assert b["optim"]["lr_d"] == 0.002 and b["optim"]["r1_gamma"] == pytest.approx(6.5536)
    assert auto_spec(256, 1)["train"]["batch_size"] == 16


def test_channel_base_sets_the_references_widths():
    cfg = StyleGAN2Config(channel_base=16384, max_width=512, resolution=256, channels=3)
    assert widths(cfg) == {256: 64, 128: 128, 64: 256, 32: 512, 16: 512, 8: 512, 4: 512}


def test_paper_and_cifar_presets_carry_the_references_numbers():
    p256 = resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "paper256")
    assert (p256.train.batch_size, p256.model.mbstd_group, p256.model.channel_base) == (64, 8, 16384)
    assert (p256.optim.r1_gamma, p256.optim.ema_kimg, p256.optim.ema_rampup, p256.model.mapping_layers) == (1, 20, 0, 8)
    cifar = resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "cifar")
    assert (cifar.model.mbstd_group, cifar.optim.r1_gamma, cifar.optim.ema_kimg, cifar.optim.ema_rampup) == (
        32,
        0.01,
        500,
        0.05,
    )
    assert (cifar.model.style_mixing, cifar.optim.pl_weight, cifar.model.mapping_layers) == (0.0, 0.0, 2)


def test_the_default_follows_the_device():
    cfg = fit_to_data(resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "default"), 64, 3)
    assert cfg.scale == "by-device"
    on_cpu, note = apply_scale(cfg, "cpu", 1)
    assert on_cpu.scale == "fixed" and on_cpu.model.width == 32 and on_cpu.model.channel_base == 0
    assert note.startswith("stylegan2 CPU-sized on cpu") and "\n" not in note
    on_cuda, note = apply_scale(cfg, "cuda", 1)
    assert on_cuda.scale == "auto" and on_cuda.train.batch_size == 32 and on_cuda.model.channel_base == 16384
    assert on_cuda.model.z_dim == 512 and on_cuda.optim.r1_gamma == pytest.approx(0.0256)
    assert "auto sizes for 64x64" in note and "batch 32" in note and "kept" not in note


def test_auto_keeps_the_values_the_config_sets():
    sets_ = ["train.batch_size=48", "optim.r1_gamma=3"]
    cfg = fit_to_data(resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, "auto", None, sets_), 32, 1)
    resolved, note = apply_scale(cfg, "cpu", 1)
    assert (resolved.train.batch_size, resolved.optim.r1_gamma) == (48, 3)
    assert resolved.model.channel_base == 16384  # the rest is the reference's
    assert note.endswith("kept from your config: optim.r1_gamma, train.batch_size")


def test_training_says_its_sizes_in_one_line(tmp_path):
    data = write_npz(tmp_path / "d.npz", n=32, size=16)
    code, _, err = cli("train", "stylegan2", "--data", data, "--out", tmp_path / "run", "--steps", 1, "--device",
                       "cpu", *sets(COMMON, TINY))  # fmt: skip
    assert code == 0, err
    assert sum(line.startswith("stylegan2 CPU-sized on cpu") for line in err.splitlines()) == 1
    assert ckpt.load(tmp_path / "run").config["scale"] == "fixed"


# --- a run from before these changes -------------------------------------------------------------


def test_an_old_stylegan2_run_resumes_as_it_trained(tmp_path):
    """A run written before path length regularisation and the EMA by images: its config lacks
    those keys. It resumes with no path length term and its per-step EMA, and a command asking for
    today's defaults is told which key differs."""
    data = write_npz(tmp_path / "d.npz", n=32, size=16)
    run = tmp_path / "old"
    old = [*TINY, "optim.pl_weight=0", "optim.ema_kimg=0", "optim.ema_rampup=0", "optim.ema_decay=0.999"]
    args = ["train", "stylegan2", "--data", data, "--out", run, "--device", "cpu", "--quiet"]
    code, _, err = cli(*args, "--steps", 2, *sets(COMMON, old))
    assert code == 0, err
    for folder in (run / "checkpoints").glob("step-*"):  # as the older genforge wrote it
        meta = json.loads((folder / ckpt.META).read_text())
        for key in ("pl_weight", "pl_interval", "pl_batch_shrink", "pl_decay", "ema_kimg", "ema_rampup"):
            del meta["config"]["optim"][key]
        del meta["config"]["scale"], meta["config"]["model"]["channel_base"]
        (folder / ckpt.META).write_text(json.dumps(meta))
    config = SPEC.config_of(ckpt.load(run))
    assert (config.optim.pl_weight, config.optim.ema_kimg, config.optim.ema_decay) == (0.0, 0.0, 0.999)

    code, _, err = cli(*args, "--steps", 4, *sets(COMMON, TINY))
    assert code == 2 and "optim.ema_decay=0.999, this command asks for 0.0" in one_error(err)
    code, _, err = cli(*args, "--steps", 4, *sets(COMMON, old))
    assert code == 0, err
    resumed = ckpt.load(run)
    assert resumed.step == 4 and "extra.pl_mean" not in resumed.tensors
    records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
    assert not any("pl_penalty" in r.get("values", {}) for r in records)


@pytest.mark.parametrize("preset", sorted(STYLEGAN2_PRESETS))
def test_every_preset_builds_and_trains_a_step(preset):
    """Every StyleGAN2 preset resolves, takes its sizes and trains (widths shrunk to fit a test)."""
    shrink = ["model.z_dim=16", "model.w_dim=16", "model.max_width=8", "model.mapping_layers=1", "train.batch_size=8"]
    cfg = resolve(StyleGAN2RunConfig, STYLEGAN2_PRESETS, preset, None, [*shrink, "train.precision=fp32"])
    cfg, _ = apply_scale(fit_to_data(cfg, 16, 1), "cpu", 1)
    family = GANTrainer(cfg, torch.device("cpu"), networks=networks)
    losses = family.train_step(batch(), None)
    assert all(torch.isfinite(v).all() for v in losses.values())


# --- two ranks: the regularisation steps keep the replicas equal ---------------------------------


def _replicas_worker(rank: int, out: str) -> None:
    family = trainer("optim.r1_interval=2")  # step 0 takes both regularisation steps of their own
    real = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(10 + rank)) * 2 - 1  # this rank's
    family.train_step(real, None)
    # parameters: buffers such as w_avg follow each rank's own batch (as the reference's)
    weights = {f"{name}.{k}": v for name in ("G", "D") for k, v in family.modules()[name].named_parameters()}
    torch.save({k: v.detach() for k, v in weights.items()}, Path(out) / f"rank{rank}.pt")


def test_regularisation_steps_average_their_gradients_over_the_ranks(tmp_path):
    """R1 and path length run through the unwrapped networks (a double backward), not through DDP:
    their gradients are averaged explicitly, so both ranks' networks stay the same."""
    from test_distributed import spawn  # noqa: PLC0415 - the two-process harness, shared with its home

    spawn(_replicas_worker, str(tmp_path))
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
