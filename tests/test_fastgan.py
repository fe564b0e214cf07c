"""FastGAN: skip-layer excitation and the discriminator's reconstruction in closed form, the
jittered hinge, the sizes it builds, and the family end to end (trains, resumes bit-identically,
samples, evaluates, exports ONNX, trains on two ranks with D's decoders in step)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genforge import checkpoint as ckpt
from genforge import families
from genforge.families.fastgan import FastGANTrainer
from genforge.losses import d_hinge, d_hinge_margins, fastgan_reconstruction
from genforge.models.fastgan import (
    SLE,
    Discriminator,
    FastGANConfig,
    Generator,
    d_width,
    g_sle_sources,
    g_width,
    with_fixed_weights,
)
from genforge.training import runs
from synthetic import COMMON, cli, install_evaluator, is_png, one_error, records, respec, sets, write_npz

TINY = ["model.ngf=8", "model.ndf=8", "model.max_width=32", "model.z_dim=16"]


def train(data, out: Path, *values: str, steps: int = 6) -> Path:
    args = ["train", "fastgan", "--data", data, "--out", out, "--steps", steps, "--device", "cpu", "--quiet"]
    code, _, err = cli(*args, *sets(COMMON, TINY, list(values)))
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "bars.npz", n=64)


def tiny_config(resolution: int = 32, channels: int = 3) -> FastGANConfig:
    return FastGANConfig(z_dim=16, ngf=8, ndf=8, max_width=32, resolution=resolution, channels=channels)


# ---------------------------------------------------------------------------------------------
# The blocks, in closed form
# ---------------------------------------------------------------------------------------------


def test_sle_is_a_sigmoid_gate_computed_from_the_pooled_low_resolution_map():
    torch.manual_seed(0)
    sle = SLE(3, 5).eval()  # eval: spectral norm's weights stay fixed while we read them
    low, high = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 16, 16)
    w1, w2 = sle.conv1.weight.detach(), sle.conv2.weight.detach()  # (5, 3, 4, 4), (5, 5, 1, 1)
    pooled = low.reshape(2, 3, 4, 2, 4, 2).mean(dim=(3, 5))  # 8x8 -> 4x4: each cell the mean of a 2x2 block
    s = torch.einsum("ocij,bcij->bo", w1, pooled)  # the 4x4 valid conv: one number per output channel
    s = s * torch.sigmoid(s)  # Swish
    gate = torch.sigmoid(s @ w2[:, :, 0, 0].t())  # (2, 5)
    torch.testing.assert_close(sle(low, high), high * gate[:, :, None, None])
    assert ((gate > 0) & (gate < 1)).all()


def test_the_generator_excites_its_16_and_32_maps_from_the_4x4_map_and_the_papers_pairs_above():
    assert g_sle_sources(32) == {16: 4, 32: 4}
    assert g_sle_sources(1024) == {16: 4, 32: 4, 64: 4, 128: 8, 256: 16, 512: 32}  # 64..512: r / 16, the reference's
    G = Generator(tiny_config(32)).eval()
    seen = {}
    G.sles["32"].register_forward_hook(lambda m, args, out: seen.update(low=args[0], high=args[1], out=out))
    G(torch.randn(2, 16), noise_mode="none")
    assert seen["low"].shape[-1] == 4 and seen["high"].shape[-1] == 32
    torch.testing.assert_close(seen["out"], seen["high"] * G.sles["32"].gate(seen["low"]))


def test_hinge_margins_of_one_are_the_plain_hinge_and_jitter_only_lowers_the_real_and_fake_terms():
    real, fake = torch.randn(4, 50), torch.randn(4, 50)
    ones = torch.ones(4, 50)
    total, parts = d_hinge_margins(real, fake, ones, ones)
    torch.testing.assert_close(total, d_hinge(real, fake)[0])
    m = torch.full((4, 50), 0.8)
    _, smaller = d_hinge_margins(real, fake, m, m)
    torch.testing.assert_close(smaller["d_real"], F.relu(0.8 - real).mean())
    torch.testing.assert_close(smaller["d_fake"], F.relu(0.8 + fake).mean())
    assert smaller["d_real"] < parts["d_real"] and smaller["d_fake"] < parts["d_fake"]


@pytest.mark.parametrize("part", [0, 1, 2, 3])
def test_reconstruction_matches_the_decoders_against_the_downscaled_and_cropped_real(part):
    torch.manual_seed(0)
    D = Discriminator(tiny_config(64)).eval()
    maps = {}
    D.downs["16"].register_forward_hook(lambda m, args, out: maps.update(f16=out))
    D.sles["8"].register_forward_hook(lambda m, args, out: maps.update(f8=out))  # the 8x8 map, gated by the 64x64
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    logits, recons = D(real, part=part)
    assert logits.shape == (2, 50) and all(r.shape == (2, 3, 32, 32) for r in recons.values())

    # the part decoder sees quarter `part` of the 16x16 map; the whole-image decoder the (excited) 8x8 map
    top, left = (part // 2) * 8, (part % 2) * 8
    torch.testing.assert_close(recons["part"], D.decode_part(maps["f16"][:, :, top : top + 8, left : left + 8]))
    torch.testing.assert_close(recons["whole"], D.decode_whole(maps["f8"]))

    # targets by hand: 2x2 block means of the real image, and of its quarter `part` (32x32 -> 32x32)
    whole_target = real.reshape(2, 3, 32, 2, 32, 2).mean(dim=(3, 5))
    part_target = real[:, :, (part // 2) * 32 : (part // 2) * 32 + 32, (part % 2) * 32 : (part % 2) * 32 + 32]
    expected = {
        "whole": (recons["whole"] - whole_target).pow(2).mean(),
        "part": (recons["part"] - part_target).pow(2).mean(),
        "small": (recons["small"] - whole_target).pow(2).mean(),
    }
    total, parts = fastgan_reconstruction(recons, real, part, weight=0.5)
    for name, value in expected.items():
        torch.testing.assert_close(parts[f"recon_{name}"], value)
    torch.testing.assert_close(total, 0.5 * sum(expected.values()))


@pytest.mark.parametrize("resolution, channels", [(32, 3), (64, 3), (32, 1), (128, 3)])
def test_shapes(resolution, channels):
    cfg = tiny_config(resolution, channels)
    G, D = Generator(cfg), Discriminator(cfg)
    images = G(torch.randn(3, 16))
    assert images.shape == (3, channels, resolution, resolution) and images.abs().max() <= 1
    assert D(images).shape == (3, 50)
    low = min(resolution // 2, 128)
    assert all(r.shape == (3, channels, low, low) for r in D(images, part=0)[1].values())


def test_the_paper_preset_has_the_papers_widths():
    cfg = families.get("fastgan").resolve("paper", None, [], None).model
    cfg.resolution, cfg.channels = 1024, 3
    assert (cfg.ngf, cfg.ndf, cfg.z_dim) == (64, 64, 256)
    # the reference's nfc tables at ngf = ndf = 64: G 1024 wide at 4x4, 8 at 1024x1024; D 512 at 8x8, 8 at 512x512
    assert [g_width(cfg, s) for s in (4, 8, 16, 32, 64, 128, 256, 512, 1024)] == [
        1024,
        512,
        256,
        128,
        128,
        64,
        32,
        16,
        8,
    ]
    assert [d_width(cfg, s) for s in (8, 16, 32, 64, 128, 256, 512)] == [512, 256, 128, 64, 32, 16, 8]


def test_noise_modes_random_draws_from_the_generator_const_repeats_none_leaves_it_out():
    G = Generator(tiny_config(32)).eval()
    for p in G.parameters():
        if p.ndim == 0:  # the noise strengths start at 0: give them some
            p.data.fill_(0.5)
    z = torch.randn(2, 16)
    draw = lambda seed: G(z, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
    assert not torch.equal(G(z, noise_mode="const"), G(z, noise_mode="none"))
    # what ONNX export records: spectral norm's weights fixed, the same images
    torch.testing.assert_close(with_fixed_weights(G)(z, noise_mode="const"), G(z, noise_mode="const"))
    assert not any(p.endswith("original") for p, _ in with_fixed_weights(G).named_parameters())


def test_sizes_fastgan_cannot_build_are_one_line(bars, tmp_path):
    code, _, err = cli("train", "fastgan", "--data", bars, "--out", tmp_path / "x", "--set", "data.resolution=16")
    assert code == 2 and "model.resolution must be a power of two from 32 to 1024" in one_error(err)
    code, _, err = cli("train", "fastgan", "--data", bars, "--out", tmp_path / "y", "--set", "optim.loss=lsgan")
    assert code == 2 and "optim.loss is not supported by fastgan" in one_error(err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------------------------------------
# The family end to end
# ---------------------------------------------------------------------------------------------


def test_a_step_trains_both_networks_and_the_decoders_through_the_augmented_reals():
    cfg = families.get("fastgan").resolve("default", None, [*TINY, "train.batch_size=8", "train.precision=fp32"])
    cfg.model.resolution, cfg.model.channels = 32, 3
    trainer = FastGANTrainer(cfg, torch.device("cpu"))
    before = {name: p.detach().clone() for name, p in trainer.D.named_parameters()}
    g_before = [p.detach().clone() for p in trainer.G.parameters()]
    logs = trainer.train_step(torch.rand(8, 3, 32, 32) * 2 - 1, None)
    assert {"d_loss", "g_loss", "d_real", "d_fake", "recon_whole", "recon_part", "recon_small"} <= set(logs)
    moved = {name.split(".")[0] for name, p in trainer.D.named_parameters() if not torch.equal(p, before[name])}
    assert {"decode_whole", "decode_part", "decode_small", "stem", "small", "logits_big"} <= moved
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.G.parameters()))


@pytest.mark.parametrize("jitter", [0.2, 0.0])
def test_hinge_margins_are_drawn_per_logit_in_one_minus_jitter_to_one(jitter):
    cfg = families.get("fastgan").resolve("default", None, [*TINY, f"objective.margin_jitter={jitter}"])
    cfg.model.resolution, cfg.model.channels = 32, 3
    margins = FastGANTrainer(cfg, torch.device("cpu"))._margins(torch.zeros(16, 50))
    assert margins.shape == (16, 50) and margins.min() >= 1 - jitter and margins.max() <= 1
    assert (len(margins.unique()) > 400) if jitter else bool((margins == 1).all())  # one draw per logit


def test_trains_the_losses_move_and_a_resumed_run_is_bit_identical(bars, tmp_path):
    values = ["train.log_every=2", "train.checkpoint_every=3"]
    whole = train(bars, tmp_path / "whole", *values, steps=6)
    parts = tmp_path / "parts"
    train(bars, parts, *values, steps=3)
    train(bars, parts, *values, steps=6)
    logs = [r["values"] for r in records(whole, "train")]
    assert len(logs) == 3 and logs[0]["recon_whole"] != logs[-1]["recon_whole"]
    assert logs[0]["d_loss"] != logs[-1]["d_loss"] and logs[0]["g_loss"] != logs[-1]["g_loss"]
    a, b = ckpt.load(whole), ckpt.load(parts)
    assert a.step == b.step == 6 and a.kind == "fastgan"
    assert {k.split(".")[1] for k in a.tensors if k.startswith("model.")} == {"G", "D", "G_ema"}
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.config["augment"]["policy"] == "diffaugment" and a.config["optim"]["loss"] == "hinge"


def test_samples_evaluates_and_exports(bars, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    install_evaluator(cache, str(bars))
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    run = train(bars, tmp_path / "run", steps=2)
    code, _, err = cli("sample", run, "--n", 4, "--out", tmp_path / "s.png", "--device", "cpu", "--seed", 3)
    assert code == 0 and is_png(tmp_path / "s.png"), err
    code, _, err = cli("sample", run, "--n", 4, "--out", tmp_path / "t.png", "--device", "cpu", "--seed", 3)
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "t.png").read_bytes()  # the seed fixes the noise too
    code, out, err = cli("evaluate", run, "--n", 64, "--device", "cpu", "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["kind"] == "fastgan" and np.isfinite(scores["fd"])
    pytest.importorskip("onnxruntime")
    code, out, err = cli("export", run, "--out", tmp_path / "g.onnx")
    assert code == 0, err
    assert "wrote the generator" in out and "max |onnxruntime - torch|" in out


# ---------------------------------------------------------------------------------------------
# Two ranks (gloo): D's decoders are synchronised like the rest of D
# ---------------------------------------------------------------------------------------------


def two_rank_worker(rank: int, data: str, out: str, dump: str) -> None:
    spec, built = families.get("fastgan"), []
    capture = respec(spec, build=lambda *args: built.append(spec.build(*args)) or built[-1])
    values = [*COMMON, *TINY, "train.batch_size=8", "train.device=cpu", "train.channels_last=false"]
    values += ["train.tensorboard=false", "train.checkpoint_every=2"]
    config = lambda: spec.resolve("default", None, [*values, "train.steps=3"], {"data": {"source": data}})  # noqa: E731
    assert runs.train(capture, config(), out, stop_after=2).step == 2
    assert runs.train(capture, config(), out).step == 3
    trainer = built[-1]
    weights = {
        f"{net}.{k}": v.detach().numpy() for net in ("G", "D") for k, v in trainer.modules()[net].state_dict().items()
    }
    np.savez(f"{dump}-{rank}.npz", **{k: v for k, v in weights.items() if "running" not in k})


def test_two_ranks_keep_the_same_weights_decoders_included(tmp_path):
    from test_distributed import spawn  # noqa: PLC0415 - the two-process harness lives with the DDP tests

    data = str(write_npz(tmp_path / "data.npz", n=32))
    dump = tmp_path / "weights"
    spawn(two_rank_worker, data, str(tmp_path / "run"), str(dump))
    with np.load(f"{dump}-0.npz") as a, np.load(f"{dump}-1.npz") as b:
        assert any(k.startswith("D.decode_part") for k in a.files)
        for name in a.files:  # batch-norm running statistics stay per rank (DDP's usual practice)
            assert np.array_equal(a[name], b[name]), name
    assert ckpt.load(tmp_path / "run").step == 3
