"""Inference is not training: loading a run builds only what samples or reconstructs (a GAN's
sampling generator; a prior and its VQ-VAE's quantizer and decoder; a VQ-VAE's encoder,
quantizer and decoder), never a discriminator or an optimizer, leaves the caller's global RNG
and the run's config as they were, and samples exactly what the trainer's own sampler does."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import genforge.models.gan
import genforge.models.patchgan
import genforge.models.stylegan2
import genforge.models.vqvae
from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.sample import sample
from genforge.config import from_dict
from genforge.errors import GenforgeError
from genforge.families.gan_trainer import GANTrainer
from genforge.families.prior import PriorTrainer
from genforge.families.registry import Interpolator, Reconstructor, Sampler
from genforge.families.stylegan2 import networks as stylegan2_networks
from genforge.families.vqvae import VQVAERunConfig
from genforge.images import to_float
from synthetic import COMMON, balanced_labels, bar_images, cli, sets, train, write_npz

TINY_STYLEGAN2 = ["model.width=8", "model.max_width=16", "model.z_dim=16", "model.w_dim=16"]
FAMILIES = ("gan", "stylegan2", "vqvae", "prior")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inference")
    data = write_npz(root / "bars.npz", n=64)
    # channels_last on: the loader once overwrote it (and compile) in the config it returned.
    gan = ["train.channels_last=true", "model.z_dim=16"]
    vqgan = ["optim.disc_weight=0.1", "optim.disc_start=0"]  # a discriminator in the checkpoint
    runs = {
        "gan": train("gan", root / "gan", data=data, steps=2, extra=gan),  # no EMA: G samples
        "stylegan2": train_stylegan2(data, root / "sg2"),  # G_ema samples
        "vqvae": train("vqvae", root / "vq", data=data, steps=2, extra=vqgan),
    }
    runs["prior"] = train("prior", root / "prior", vqvae=runs["vqvae"], steps=2)
    return runs


def train_stylegan2(data: Path, out: Path) -> Path:
    args = ["train", "stylegan2", "--data", data, "--out", out, "--steps", 2, "--device", "cpu", "--quiet"]
    code, _, err = cli(*args, *sets(COMMON, TINY_STYLEGAN2))
    assert code == 0, err
    return out


def parameters(model) -> int:
    """Parameters of every module the loaded model holds (each counted once)."""
    held = {id(p): p for m in vars(model).values() if isinstance(m, torch.nn.Module) for p in m.parameters()}
    return sum(p.numel() for p in held.values())


def stored(c: ckpt.Checkpoint, prefix: str, module: torch.nn.Module) -> int:
    """Parameters the checkpoint holds for ``module`` under ``prefix``."""
    names = {name for name, _ in module.named_parameters()}
    return sum(v.numel() for k, v in c.tensors.items() if k.startswith(prefix + ".") and k[len(prefix) + 1 :] in names)


def refuse(monkeypatch, cls, what: str) -> None:
    def built(*args, **kwargs):
        raise AssertionError(f"loading built {what}")

    monkeypatch.setattr(cls, "__init__", built)


@pytest.mark.parametrize("family", FAMILIES)
def test_loading_leaves_the_global_rng_alone(runs, family):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    families.load(runs[family], CPU)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_loading_builds_no_optimizer_no_discriminator_and_does_not_reseed(runs, family, monkeypatch):
    refuse(monkeypatch, torch.optim.Optimizer, "an optimizer")
    refuse(monkeypatch, genforge.models.gan.Discriminator, "a DCGAN discriminator")
    refuse(monkeypatch, genforge.models.stylegan2.Discriminator, "a StyleGAN2 discriminator")
    refuse(monkeypatch, genforge.models.patchgan.PatchGAN, "a VQGAN discriminator")
    if family == "prior":  # a prior decodes codes: its VQ-VAE's encoder is not needed
        refuse(monkeypatch, genforge.models.vqvae.Encoder, "a VQ-VAE encoder")
    monkeypatch.setattr(torch, "manual_seed", lambda seed: pytest.fail("loading reseeded the global RNG"))
    _, model = families.load(runs[family], CPU)
    assert model.step == 2


@pytest.mark.parametrize("family", ["gan", "stylegan2"])
def test_a_loaded_gan_holds_its_sampling_generator_alone(runs, family):
    c = ckpt.load(runs[family])
    _, model = families.load(runs[family], CPU)
    sampler = "model.G_ema" if family == "stylegan2" else "model.G"  # the EMA copy when the run kept one
    assert any(k.startswith("model.D.") for k in c.tensors)  # the discriminator is there, and left there
    assert parameters(model) == stored(c, sampler, model.net) == sum(p.numel() for p in model.net.parameters())
    assert not model.net.training and not any(p.requires_grad for p in model.net.parameters())


def test_a_loaded_prior_holds_its_network_and_the_vqvaes_decoder(runs):
    c = ckpt.load(runs["prior"])
    _, model = families.load(runs["prior"], CPU)
    expected = stored(c, "model.prior", model.network)
    expected += stored(c, "model.vqvae.quantizer", model.decoder.quantizer)
    expected += stored(c, "model.vqvae.decoder", model.decoder.decoder)
    assert parameters(model) == expected
    assert any(k.startswith("model.vqvae.encoder.") for k in c.tensors)  # stored, not loaded


def test_a_loaded_vqvae_holds_no_discriminator(runs):
    c = ckpt.load(runs["vqvae"])
    _, model = families.load(runs["vqvae"], CPU)
    assert any(k.startswith("model.disc.") for k in c.tensors)
    assert parameters(model) == stored(c, "model.vqvae", model.vqvae)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loaded_config_is_the_checkpoints(runs, family):
    c = ckpt.load(runs[family])
    spec, model = families.load(runs[family], CPU)
    assert model.config == spec.config_of(c)
    if family == "gan":
        assert model.config.train.channels_last is True  # as trained, not overwritten for sampling


def trainer_of(family: str, c: ckpt.Checkpoint):
    """The trainer as the old loader built it (compile and channels_last off), weights unpacked."""
    cfg = copy.deepcopy(families.get(family).config_of(c))
    cfg.train.compile, cfg.train.channels_last = False, False
    if family == "prior":
        vq_values = families.get("vqvae").migrate(c.state["extra"]["vqvae_config"])
        vq = genforge.models.vqvae.VQVAE(from_dict(VQVAERunConfig, vq_values).model)
        trainer = PriorTrainer(cfg, vq, vq_values, CPU)
    else:
        trainer = GANTrainer(cfg, CPU, **({"networks": stylegan2_networks} if family == "stylegan2" else {}))
    for name, module in trainer.modules().items():
        ckpt.unpack_module(f"model.{name}", module, c.tensors)
    return trainer


@pytest.mark.parametrize("family", ["gan", "stylegan2", "prior"])
def test_samples_are_the_trainers_samplers(runs, family):
    c = ckpt.load(runs[family])
    _, model = families.load(runs[family], CPU)
    _, reference = families.load(runs[family], CPU)
    trainer = trainer_of(family, c)
    if family == "prior":
        reference.network, reference.decoder = trainer.net.eval(), trainer.vqvae.eval()
    else:
        reference.net = trainer.sampler.eval()
    ours = model.sample(6, torch.Generator().manual_seed(3))
    theirs = reference.sample(6, torch.Generator().manual_seed(3))
    assert ours.shape[0] == 6 and torch.equal(ours, theirs)
    assert not torch.equal(ours, model.sample(6, torch.Generator().manual_seed(4)))  # the seed matters


@pytest.mark.parametrize("family", FAMILIES)
def test_what_a_model_can_do_is_its_protocol(runs, family):
    _, model = families.load(runs[family], CPU)
    assert isinstance(model, Sampler) == (family != "vqvae")
    assert isinstance(model, Interpolator) == (family in ("gan", "stylegan2"))  # a latent space to walk
    assert isinstance(model, Reconstructor) == (family == "vqvae")


def test_a_vqvae_encodes_decodes_and_reconstructs(runs):
    _, model = families.load(runs["vqvae"], CPU)
    x = to_float(bar_images(balanced_labels(8)), CPU)  # (8, 1, 32, 32) in [-1, 1]
    codes = model.encode(x)
    assert codes.shape == (8, *model.vqvae.grid_size) and int(codes.max()) < model.vqvae.num_codes
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.abs().max() <= 1
    assert torch.allclose(model.decode(codes), recon, atol=1e-5)  # the reconstruction goes through the codes


def test_sampling_a_vqvae_is_one_clear_refusal(runs, tmp_path):
    with pytest.raises(
        GenforgeError, match=r"does not generate; train a prior on it \(genforge train prior --vqvae RUN\)"
    ):
        sample(runs["vqvae"], 4, tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_interpolating_a_prior_is_refused(runs, tmp_path):
    with pytest.raises(GenforgeError, match="interpolation needs a model with a latent space"):
        sample(runs["prior"], 2, tmp_path / "strips.png", interpolate=3)
    assert not (tmp_path / "strips.png").exists()
