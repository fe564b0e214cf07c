"""VQ-VAE model, its losses and the PatchGAN discriminator: shapes, checkpoints, a short fit."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genforge.config import from_dict
from genforge.errors import GenforgeError
from genforge.families.vqvae import VQVAERunConfig
from genforge.losses import adaptive_weight, d_hinge, g_hinge, vqvae_loss
from genforge.models.patchgan import PatchGAN, PatchGANConfig
from genforge.models.quantizers import QuantizerConfig
from genforge.models.vqvae import VQVAE, VQVAEConfig


def tiny(channels=1, resolution=32, downsample=4, **quantizer) -> VQVAE:
    torch.manual_seed(0)
    config = VQVAEConfig(
        channels=channels,
        resolution=resolution,
        width=8,
        num_res_blocks=1,
        downsample=downsample,
        latent_dim=8,
        quantizer=QuantizerConfig(**{"num_codes": 32, **quantizer}),
    )
    return VQVAE(config)


@pytest.mark.parametrize(
    "channels, source, resolution, downsample",
    [(1, 28, 32, 4), (1, 32, 32, 4), (3, 32, 32, 8), (3, 64, 64, 8), (1, 64, 64, 4)],
)
def test_shapes_through_encode_quantize_decode(channels, source, resolution, downsample):
    model = tiny(channels, resolution, downsample).eval()
    x = torch.rand(2, channels, source, source) * 2 - 1
    x = F.pad(x, [(resolution - source) // 2] * 4, value=-1.0)  # the caller pads 28 -> 32
    side = resolution // downsample
    assert model.grid_size == (side, side)
    assert model.encode(x).shape == (2, 8, side, side)
    recon, out = model(x)
    assert recon.shape == x.shape and out.indices.shape == (2, side, side)
    indices = model.encode_indices(x)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(model.decode_indices(indices), recon)


def test_fsq_vqvae_shapes():
    model = tiny(3, 32, 4, method="fsq", fsq_levels=(5, 3, 3)).eval()
    recon, out = model(torch.zeros(2, 3, 32, 32))
    assert recon.shape == (2, 3, 32, 32) and model.num_codes == 45 and out.indices.max() < 45
    assert model.decode_indices(out.indices).shape == (2, 3, 32, 32)


def test_resolution_that_does_not_divide_names_the_fix():
    with pytest.raises(
        GenforgeError, match=r"model\.resolution is not divisible by downsample 8; pad the images to 32.*got 28"
    ):
        from_dict(VQVAERunConfig, {"model": {"channels": 1, "resolution": 28, "downsample": 8}})
    VQVAEConfig(channels=1, resolution=28, downsample=4)  # 7x7 codes are fine
    with pytest.raises(GenforgeError, match="downsample"):
        VQVAEConfig(downsample=3)


def test_wrong_images_and_grids_are_refused():
    model = tiny()
    with pytest.raises(GenforgeError, match=r"\(B, 1, 32, 32\)"):
        model(torch.zeros(1, 1, 28, 28))
    with pytest.raises(GenforgeError, match="code grid"):
        model.decode_indices(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(GenforgeError, match="from the data"):
        VQVAE(VQVAEConfig())


def test_config_builds_from_plain_dicts_with_nested_quantizer():
    config = from_dict(
        VQVAEConfig, {"channels": 1, "resolution": 32, "quantizer": {"method": "fsq", "fsq_levels": [8, 5, 5]}}
    )
    assert config.quantizer.fsq_levels == (8, 5, 5) and VQVAE(config).num_codes == 200
    with pytest.raises(GenforgeError, match="model.quantizer.num_codes must be positive, got -3"):
        from_dict(VQVAERunConfig, {"model": {"quantizer": {"num_codes": -3}}})


@pytest.mark.parametrize(
    "quantizer", [dict(ema=True, kmeans_init=True), dict(ema=False, code_dim=4), dict(method="fsq")]
)
def test_safetensors_round_trip_gives_identical_reconstructions(tmp_path, quantizer):
    model = tiny(**quantizer, restart_after=0)
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):  # move the weights and the quantizer's buffers off their initial values
        recon, out = model.train()(x)
        loss, _ = vqvae_loss(x, recon, out.loss, out.parts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))

    torch.manual_seed(123)  # a different initialisation, overwritten by the load
    fresh = VQVAE(model.config)
    fresh.load_state_dict(load_file(str(path)), strict=True)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    if quantizer.get("ema"):
        assert bool(fresh.quantizer.initialised) and int(fresh.quantizer.steps) == 2
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x)[0], model(x)[0])
    # training continues identically: the EMA statistics and usage counters came along
    torch.testing.assert_close(fresh.train()(x)[0], model.train()(x)[0], rtol=0, atol=0)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


@pytest.mark.parametrize("quantizer", [dict(ema=True), dict(ema=False), dict(method="fsq")])
def test_a_few_steps_reduce_reconstruction_loss(quantizer):
    model = tiny(resolution=16, **quantizer)
    torch.manual_seed(1)
    # synthetic images: horizontal and vertical bars at random positions
    x = torch.full((16, 1, 16, 16), -1.0)
    for i, pos in enumerate(torch.randint(2, 14, (16,)).tolist()):
        if i % 2:
            x[i, :, pos - 2 : pos + 2, :] = 1.0
        else:
            x[i, :, :, pos - 2 : pos + 2] = 1.0
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    history = []
    for _ in range(40):
        recon, out = model.train()(x)
        loss, parts = vqvae_loss(x, recon, out.loss, out.parts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(parts["recon_mse"].item())
    assert history[-1] < 0.5 * history[0], history


def test_vqvae_loss_pins_each_weight_to_its_term():
    x, recon = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    q_loss = torch.tensor(0.3)
    parts_in = {"codebook": torch.tensor(0.2), "commitment": torch.tensor(0.1)}
    total, parts = vqvae_loss(x, recon, q_loss, parts_in, recon_weight=2.0)
    assert total.item() == pytest.approx(2.0 * 0.25 + 0.3)
    assert parts["recon_mse"].item() == pytest.approx(0.25) and parts["quantizer"].item() == pytest.approx(0.3)
    assert parts["codebook"].item() == pytest.approx(0.2) and parts["commitment"].item() == pytest.approx(0.1)
    total, parts = vqvae_loss(x, recon, q_loss, parts_in, recon_loss="l1")
    assert total.item() == pytest.approx(0.5 + 0.3) and "recon_l1" in parts
    with pytest.raises(GenforgeError, match="mse, l1"):
        vqvae_loss(x, recon, q_loss, parts_in, recon_loss="ssim")


def test_adaptive_weight_is_the_ratio_of_gradient_norms_clamped_and_detached():
    weight = torch.ones(3, requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    nll, g = (weight * a).sum(), (weight * b).sum()  # gradients a and b
    value = adaptive_weight(nll, g, weight)
    assert value.item() == pytest.approx(5.0 / (1.0 + 1e-4)) and not value.requires_grad
    assert adaptive_weight(nll, g, weight, max_weight=2.0).item() == 2.0
    nll.backward()  # the graphs were kept for the real backward
    assert torch.equal(weight.grad, a)


def test_adaptive_weight_works_with_the_decoders_last_layer():
    model = tiny()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, _ = model(x)
    disc = PatchGAN(PatchGANConfig(channels=1, width=8, norm="none"))
    g_loss, _ = g_hinge(disc(recon))
    value = adaptive_weight(F.l1_loss(recon, x), g_loss, model.decoder.last_layer.weight)
    assert value.ndim == 0 and value > 0


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("channels, resolution, layers", [(1, 32, 2), (3, 64, 3), (1, 32, 1)])
def test_patchgan_gives_a_grid_of_logits(norm, channels, resolution, layers):
    disc = PatchGAN(PatchGANConfig(channels=channels, width=8, num_layers=layers, norm=norm))
    x = torch.rand(2, channels, resolution, resolution, requires_grad=True) * 2 - 1
    logits = disc(x)
    side = disc.output_size(resolution)
    assert logits.shape == (2, 1, side, side) and side > 1
    loss, parts = d_hinge(logits, disc(torch.zeros_like(x)))
    loss.backward()
    assert set(parts) == {"d_real", "d_fake"}
    assert all(p.grad is not None for p in disc.parameters())


def test_patchgan_config_and_input_errors():
    assert PatchGAN(PatchGANConfig(channels=1)).output_size(32) == 6
    with pytest.raises(GenforgeError, match="discriminator.norm must be one of"):
        from_dict(VQVAERunConfig, {"discriminator": {"norm": "spectral-ish"}})
    with pytest.raises(GenforgeError, match="too small"):
        PatchGAN(PatchGANConfig(channels=1, num_layers=5))(torch.zeros(1, 1, 16, 16))
    with pytest.raises(GenforgeError, match=r"\(B, 3, H, W\)"):
        PatchGAN(PatchGANConfig(channels=3))(torch.zeros(1, 1, 32, 32))
