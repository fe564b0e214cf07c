"""Quantizers: VQ invariants, the beta term, EMA, k-means init, restarts, cosine, FSQ, usage window."""

import pytest
import torch
import torch.nn.functional as F

from genforge.config import from_dict
from genforge.errors import GenforgeError
from genforge.families.vqvae import VQVAERunConfig
from genforge.models.quantizers import (
    CodebookHealth,
    FiniteScalarQuantizer,
    QuantizerConfig,
    VectorQuantizer,
    build_quantizer,
)

PLAIN = dict(ema=False, kmeans_init=False, restart_after=0)  # the paper's quantizer, no extras


def vq(latent_dim=8, **overrides) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(QuantizerConfig(**{"num_codes": 16, **PLAIN, **overrides}), latent_dim)


def grid(rows: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # (B*H*W, D) -> (B, D, H, W)


@pytest.mark.parametrize("overrides", [{}, {"code_dim": 3}, {"ema": True}, {"cosine": True}])
def test_quantized_is_the_lookup_of_its_indices(overrides):
    quantizer = vq(**overrides).eval()
    out = quantizer(torch.randn(2, 8, 4, 5))
    assert out.quantized.shape == (2, 8, 4, 5)
    assert out.indices.shape == (2, 4, 5) and out.indices.dtype == torch.long
    assert out.loss.ndim == 0 and set(out.parts) == {"codebook", "commitment"}
    torch.testing.assert_close(out.quantized, quantizer.lookup(out.indices), atol=1e-6, rtol=0)


def test_indices_are_the_nearest_codes_by_brute_force():
    quantizer = vq()
    z = torch.randn(3, 8, 4, 4)
    out = quantizer(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = ((rows[:, None, :] - quantizer.codebook[None]) ** 2).sum(-1).argmin(1)  # (N,)
    assert torch.equal(out.indices.reshape(-1), brute)
    assert torch.equal(quantizer.to_indices(z), out.indices)


def test_straight_through_passes_the_decoder_gradient_to_the_encoder_unchanged():
    quantizer = vq()
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 8, 3, 3)
    (quantizer(z).quantized * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)


def _loss_gradients(beta: float):
    quantizer = vq(beta=beta)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = quantizer(z)
    out.loss.backward()  # the quantizer's loss alone, no reconstruction term
    return z, quantizer, out


def test_beta_weights_the_encoder_side_commitment_term_only():
    z_small, vq_small, out_small = _loss_gradients(beta=0.25)
    z_big, vq_big, out_big = _loss_gradients(beta=1.0)
    # same seed -> same z and codebook; the encoder's gradient scales with beta ...
    torch.testing.assert_close(z_big.grad, 4 * z_small.grad)
    # ... in closed form: d/dz beta * mean((z - e)^2) = 2 beta (z - e) / numel
    codes = vq_small.lookup(out_small.indices)
    torch.testing.assert_close(z_small.grad, 2 * 0.25 * (z_small - codes).detach() / z_small.numel())
    # ... and the codebook's gradient does not depend on beta
    torch.testing.assert_close(vq_big.codebook.grad, vq_small.codebook.grad)
    assert vq_small.codebook.grad.abs().sum() > 0
    torch.testing.assert_close(out_big.parts["commitment"], 4 * out_small.parts["commitment"])
    torch.testing.assert_close(out_big.parts["codebook"], out_small.parts["codebook"])


def test_ema_moves_the_assigned_code_to_its_vectors_mean_and_leaves_the_others():
    quantizer = vq(latent_dim=2, num_codes=4, ema=True, decay=0.8)
    start = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]])
    quantizer.codebook.copy_(start)
    quantizer.embed_sum.copy_(start)
    assert "codebook" not in dict(quantizer.named_parameters())  # EMA codes are not optimised
    rows = torch.tensor([3.0, 3.0]) + 0.1 * torch.randn(64, 2)  # all nearest to code 0
    z = grid(rows, 1, 8, 8)
    quantizer.eval()(z)
    assert torch.equal(quantizer.codebook, start)  # no updates outside training
    quantizer.train()
    before = (quantizer.codebook[0] - rows.mean(0)).norm()
    out = quantizer(z)
    assert (out.indices == 0).all() and out.parts["codebook"] == 0
    after = (quantizer.codebook[0] - rows.mean(0)).norm()
    assert after < 0.25 * before
    torch.testing.assert_close(quantizer.codebook[1:], start[1:], atol=1e-3, rtol=0)
    for _ in range(30):
        quantizer(z)
    torch.testing.assert_close(quantizer.codebook[0], rows.mean(0), atol=1e-3, rtol=0)


def test_dead_codes_are_restarted_on_encoder_outputs_and_then_used():
    quantizer = vq(latent_dim=4, num_codes=16, restart_after=3)
    with torch.no_grad():
        quantizer.codebook[1:] = 100.0  # far from the data: never chosen
        quantizer.codebook[0] = 0.0
    z = torch.randn(2, 4, 4, 4)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 4)
    for _ in range(3):
        assert (quantizer(z).indices == 0).all()
    assert torch.all(quantizer.codebook[1:] == 100.0)  # not yet: unused for 3 steps, restart_after=3
    out = quantizer(z)  # restarts before quantizing
    for code in quantizer.codebook[1:]:
        assert ((rows - code).abs().max(1).values < 1e-6).any(), "a restarted code must sit on an encoder output"
    assert out.indices.unique().numel() > 8
    # restarted codes are tensors in the state_dict, as are the usage counters
    assert {"steps", "last_used", "initialised"} <= set(quantizer.state_dict())
    assert int(quantizer.steps) == 4


def test_kmeans_init_puts_a_code_on_every_data_cluster():
    centres = torch.tensor([[5.0, 5.0, 0.0], [-5.0, 5.0, 0.0], [5.0, -5.0, 0.0], [-5.0, -5.0, 3.0]])
    torch.manual_seed(1)
    rows = centres.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 3)
    rows = rows[torch.randperm(200)]
    quantizer = vq(latent_dim=3, num_codes=4, kmeans_init=True, ema=True)
    assert not quantizer.initialised
    quantizer.eval()(grid(rows, 2, 10, 10))
    assert not quantizer.initialised  # only a training batch initialises
    quantizer.train()(grid(rows, 2, 10, 10))
    assert quantizer.initialised
    distance = torch.cdist(centres, quantizer.codebook)  # (clusters, codes)
    assert (distance.min(1).values < 0.05).all()
    torch.testing.assert_close(
        quantizer.embed_sum / quantizer.cluster_size[:, None], quantizer.codebook, atol=0.05, rtol=0
    )
    first = quantizer.codebook.clone()
    quantizer(grid(rows, 2, 10, 10))  # initialised once, not every batch
    assert (quantizer.codebook - first).abs().max() < 0.05


def test_cosine_codes_and_outputs_are_unit_norm():
    quantizer = vq(cosine=True, ema=True, restart_after=2)
    z = 3 * torch.randn(2, 8, 3, 3)
    for _ in range(4):
        out = quantizer.train()(z)
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(2, 3, 3))
    torch.testing.assert_close(quantizer.lookup(out.indices).norm(dim=1), torch.ones(2, 3, 3))
    # nearest in cosine distance = largest dot product with the normalised codes
    rows = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, 8), dim=1)
    quantizer.eval()
    expected = (rows @ F.normalize(quantizer.codebook, dim=1).t()).argmax(1)
    assert torch.equal(quantizer(z).indices.reshape(-1), expected)


def test_lower_codebook_dimension_projects_in_and_out():
    quantizer = vq(latent_dim=16, code_dim=4, num_codes=32)
    assert quantizer.codebook.shape == (32, 4)
    assert quantizer.project_in.weight.shape == (4, 16, 1, 1)
    assert quantizer.project_out.weight.shape == (16, 4, 1, 1)
    z = torch.randn(2, 16, 3, 3, requires_grad=True)
    out = quantizer(z)
    assert out.quantized.shape == (2, 16, 3, 3) and out.indices.max() < 32
    assert quantizer.lookup(out.indices).shape == (2, 16, 3, 3)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad.abs().sum() > 0 and quantizer.project_in.weight.grad.abs().sum() > 0


def test_distances_and_ema_stay_float32_under_autocast():
    quantizer = vq(ema=True)
    z = torch.randn(2, 8, 4, 4)
    expected = quantizer.to_indices(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer.train()(z)
    assert torch.equal(out.indices, expected)
    assert quantizer.codebook.dtype == quantizer.cluster_size.dtype == torch.float32


def _fsq(levels=(8, 5, 5, 5), latent_dim=None):
    torch.manual_seed(0)
    config = QuantizerConfig(method="fsq", fsq_levels=levels)
    return build_quantizer(config, latent_dim or len(levels))


def test_fsq_reaches_every_code_and_round_trips_its_indices():
    quantizer = _fsq()
    assert isinstance(quantizer, FiniteScalarQuantizer) and quantizer.num_codes == 1000
    # one input per grid point: the preimage, through tanh, of each channel's integer levels
    channels = []
    for level in (8, 5, 5, 5):
        half, offset = (level - 1) * (1 + 1e-3) / 2, 0.5 * (level % 2 == 0)
        integers = torch.arange(level) - level // 2  # e.g. -4..3 for 8 levels, -2..2 for 5
        channels.append(torch.atanh((integers + offset) / half) - torch.atanh(torch.tensor(offset / half)))
    axes = torch.meshgrid(*channels, indexing="ij")
    z = torch.stack([a.reshape(-1) for a in axes])[None, :, :, None]  # (1, 4, 1000, 1)
    out = quantizer(z)
    assert out.indices.min() == 0 and out.indices.max() == 999
    assert out.indices.unique().numel() == 1000
    assert out.loss == 0
    torch.testing.assert_close(out.quantized, quantizer.lookup(out.indices))
    assert out.quantized.abs().max() <= 1
    every = quantizer.lookup(torch.arange(1000).reshape(1, 1, 1000))  # (1, 4, 1, 1000)
    assert every[0, :, 0].t().unique(dim=0).shape == (1000, 4)  # 1000 distinct grid points


def test_fsq_with_projections_passes_gradients_straight_through():
    quantizer = _fsq(levels=(5, 3), latent_dim=6)
    z = torch.randn(2, 6, 3, 3, requires_grad=True)
    out = quantizer(z)
    assert out.quantized.shape == (2, 6, 3, 3) and out.indices.max() < 15
    torch.testing.assert_close(out.quantized, quantizer.lookup(out.indices))
    out.quantized.square().sum().backward()
    assert z.grad.abs().sum() > 0


def test_codebook_health_counts_codes_over_a_window_of_batches():
    health = CodebookHealth(num_codes=10, window=3)
    assert health.summary() == {"codebook_usage": 0.0, "codebook_perplexity": 0.0, "dead_codes": 10}
    for batch in ([0, 1], [2, 3], [4, 4, 0, 1, 2, 3]):
        health.update(torch.tensor(batch).reshape(1, 1, -1))
    assert health.usage() == pytest.approx(0.5) and health.dead_codes() == 5
    assert health.perplexity() == pytest.approx(5.0)  # each of 5 codes twice: uniform over 5
    health.update(torch.tensor([[[9]]]))  # the window drops the first batch
    assert health.usage() == pytest.approx(0.6)
    health.update(torch.tensor([[[9]]]))
    health.update(torch.tensor([[[9]]]))
    assert health.summary() == {"codebook_usage": 0.1, "codebook_perplexity": 1.0, "dead_codes": 9}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_codes", -3, "model.quantizer.num_codes must be positive, got -3"),
        ("method", "gumbel", "model.quantizer.method must be one of vq, fsq"),
        ("decay", 1.0, "model.quantizer.decay"),
        ("fsq_levels", (8, 1), "model.quantizer.fsq_levels"),
        ("restart_after", -1, "model.quantizer.restart_after"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    """The quantizer names its own field; the config machinery places it in its section."""
    with pytest.raises(GenforgeError, match=message.split("model.quantizer.")[1].split(" ")[0]):
        QuantizerConfig(**{field: value})
    with pytest.raises(GenforgeError, match=message.replace(".", r"\.")):
        from_dict(VQVAERunConfig, {"model": {"quantizer": {field: list(value) if isinstance(value, tuple) else value}}})


def test_lookup_rejects_out_of_range_indices():
    with pytest.raises(GenforgeError, match="code indices must be in"):
        vq().lookup(torch.full((1, 2, 2), 16))
