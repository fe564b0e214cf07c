"""Pure loss functions. Each returns ``(total, parts)``: the scalar to backpropagate and a dict
of its named terms (detached), so that logs show what the total is made of and tests can pin
each coefficient to its own term.

GAN losses take the discriminator's raw logits. The founding document's minimax game
min_G max_D E[log D(x)] + E[log(1 - D(G(z)))] appears here in its practical, non-saturating form
(Goodfellow et al. 2014, sec. 3): the generator maximises log D(G(z)) instead of minimising
log(1 - D(G(z))), which has the same fixed point but does not vanish when D wins early.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genforge.draws import Source, rand
from genforge.errors import GenforgeError

Parts = dict[str, torch.Tensor]

# ---------------------------------------------------------------------------------------------
# GAN: discriminator and generator losses by name
# ---------------------------------------------------------------------------------------------


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """-log D(x) - log(1 - D(G(z))), with D = sigmoid(logits)."""
    real = F.softplus(-real_logits).mean()
    fake = F.softplus(fake_logits).mean()
    return real + fake, {"d_real": real.detach(), "d_fake": fake.detach()}


def g_nonsaturating(fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """-log D(G(z))."""
    loss = F.softplus(-fake_logits).mean()
    return loss, {"g_adv": loss.detach()}


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye 2017; Miyato et al. 2018)."""
    real = F.relu(1 - real_logits).mean()
    fake = F.relu(1 + fake_logits).mean()
    return real + fake, {"d_real": real.detach(), "d_fake": fake.detach()}


def g_hinge(fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """-D(G(z))."""
    loss = -fake_logits.mean()
    return loss, {"g_adv": loss.detach()}


def d_least_squares(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """LSGAN (Mao et al. 2017), targets 1 for real and 0 for fake, halved as in the paper."""
    real = 0.5 * (real_logits - 1).pow(2).mean()
    fake = 0.5 * fake_logits.pow(2).mean()
    return real + fake, {"d_real": real.detach(), "d_fake": fake.detach()}


def g_least_squares(fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    loss = 0.5 * (fake_logits - 1).pow(2).mean()
    return loss, {"g_adv": loss.detach()}


def d_wasserstein(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    """Critic loss of WGAN: D(G(z)) - D(x). Pair it with ``gradient_penalty`` (WGAN-GP)."""
    real = -real_logits.mean()
    fake = fake_logits.mean()
    return real + fake, {"d_real": real.detach(), "d_fake": fake.detach()}


def g_wasserstein(fake_logits: torch.Tensor) -> tuple[torch.Tensor, Parts]:
    loss = -fake_logits.mean()
    return loss, {"g_adv": loss.detach()}


GanLoss = tuple[Callable[..., tuple[torch.Tensor, Parts]], Callable[..., tuple[torch.Tensor, Parts]]]

# name -> (discriminator loss, generator loss); ``--help`` lists the keys.
GAN_LOSSES: dict[str, GanLoss] = {
    "nonsaturating": (d_nonsaturating, g_nonsaturating),
    "hinge": (d_hinge, g_hinge),
    "lsgan": (d_least_squares, g_least_squares),
    "wgan-gp": (d_wasserstein, g_wasserstein),
}

# ---------------------------------------------------------------------------------------------
# GAN: penalties on the discriminator's gradient
# ---------------------------------------------------------------------------------------------


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor, gamma: float) -> tuple[torch.Tensor, Parts]:
    """gamma/2 * E ||grad_x D(x)||^2 on real data (Mescheder et al. 2018).

    ``real_images`` must have had ``requires_grad_(True)`` before ``real_logits`` were computed.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    penalty = grad.pow(2).flatten(1).sum(1).mean()
    total = 0.5 * gamma * penalty
    return total, {"r1": penalty.detach()}


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    weight: float,
    generator: Source = None,
) -> tuple[torch.Tensor, Parts]:
    """weight * E (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat (Gulrajani et al. 2017)."""
    b = real_images.shape[0]
    alpha = rand((b, 1, 1, 1), generator, real_images.device)
    mixed = (alpha * real_images.detach() + (1 - alpha) * fake_images.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    penalty = (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
    return weight * penalty, {"gp": penalty.detach()}


def path_length_penalty(
    images: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor, pl_mean: torch.Tensor, weight: float, decay: float
) -> tuple[torch.Tensor, Parts]:
    """StyleGAN2's path length regularisation (Karras et al. 2020, sec. 3.2), as stylegan2-ada-pytorch's
    ``StyleGAN2Loss`` (phase Gpl) computes it.

    images (B, C, H, W) made from ws (B, num_ws, w_dim) with the graph kept; ``noise`` (B, C, H, W) is
    N(0, 1) / sqrt(H * W), drawn by the caller. The length of each sample's Jacobian-vector product is
    sqrt(mean over the ws of the squared norm over w of d sum(images * noise) / d ws); ``pl_mean``
    (a 0-dim tensor, the running mean of the lengths) moves towards the batch mean by ``decay``, and
    the penalty is weight * mean (length - that new mean)^2. As the reference, the new mean keeps its
    graph inside the penalty (its gradient flows through the batch mean). Returns ``parts["pl_mean"]``,
    the new running mean (detached), which the caller stores for the next call.
    """
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)  # (B, num_ws, w_dim)
    lengths = grads.float().square().sum(2).mean(1).sqrt()  # (B,)
    mean = pl_mean.lerp(lengths.mean(), decay)
    penalty = (lengths - mean).square().mean()
    return weight * penalty, {"pl_penalty": penalty.detach(), "pl_mean": mean.detach()}


# ---------------------------------------------------------------------------------------------
# VQ-VAE losses
# ---------------------------------------------------------------------------------------------

# the reconstruction term by name: L2 is the VQ-VAE paper's, L1 keeps edges sharper
RECONSTRUCTION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
}


def vqvae_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    quantizer_loss: torch.Tensor,
    quantizer_parts: Parts,
    recon_weight: float = 1.0,
    recon_loss: str = "mse",
    perceptual: torch.Tensor | None = None,
    perceptual_weight: float = 0.0,
) -> tuple[torch.Tensor, Parts]:
    """recon_weight * d(x, recon) + quantizer_loss + perceptual_weight * perceptual.

    d is ``RECONSTRUCTION_LOSSES[recon_loss]``. ``quantizer_loss`` already holds the codebook and
    beta-weighted commitment terms (see ``QuantizerOutput``); its parts are passed through so the
    log shows each of them. ``perceptual`` is ``perceptual_distance(maps(recon), maps(x))``
    of a frozen feature network (VQGAN's LPIPS term), computed by the caller, who holds the
    network; it joins the total only with a positive weight.
    """
    if recon_loss not in RECONSTRUCTION_LOSSES:
        raise GenforgeError(
            f"reconstruction loss must be one of {', '.join(RECONSTRUCTION_LOSSES)}, got {recon_loss!r}"
        )
    assert x.shape == recon.shape, f"images {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ"
    recon_term = RECONSTRUCTION_LOSSES[recon_loss](recon.float(), x.float())  # float32 under autocast too
    total = recon_weight * recon_term + quantizer_loss
    parts = {f"recon_{recon_loss}": recon_term.detach(), "quantizer": quantizer_loss.detach()}
    parts.update({name: value.detach() for name, value in quantizer_parts.items()})
    if perceptual_weight > 0:
        assert perceptual is not None, "a perceptual weight needs the perceptual distance"
        total = total + perceptual_weight * perceptual
        parts["perceptual"] = perceptual.detach()
    return total, parts


NORM_FLOOR = 1e-4


def perceptual_distance(
    maps_x: list[torch.Tensor], maps_y: list[torch.Tensor], weights: list[float] | None = None
) -> torch.Tensor:
    """LPIPS without its learned heads (Zhang et al. 2018, eq. 1 with w = 1): per layer, unit-normalise
    each position's feature vector over channels, take the squared distance, average over positions
    and the batch; then the (weighted) sum over layers. Each layer's term lies in [0, 4].

    maps: one (B, C_l, H_l, W_l) tensor per layer, the same shapes on both sides. Computed in float32.
    """
    assert len(maps_x) == len(maps_y) and maps_x, "one feature map per layer on each side"
    weights = [1.0] * len(maps_x) if weights is None else weights
    assert len(weights) == len(maps_x), f"{len(weights)} weights for {len(maps_x)} layers"
    total = maps_x[0].new_zeros((), dtype=torch.float32)
    for fx, fy, weight in zip(maps_x, maps_y, weights):
        assert fx.shape == fy.shape, f"feature maps {tuple(fx.shape)} and {tuple(fy.shape)} differ"
        # The floor on the norm (LPIPS: 1e-10) bounds the gradient of a nearly-zero ReLU vector,
        # whose direction means nothing, at 1e4; trained features have norms of order one.
        nx = F.normalize(fx.float(), dim=1, eps=NORM_FLOOR)
        ny = F.normalize(fy.float(), dim=1, eps=NORM_FLOOR)
        total = total + weight * (nx - ny).pow(2).sum(1).mean()
    return total


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer_weight: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """Weight that makes the adversarial gradient as large as the reconstruction's at the decoder's
    last layer (Esser et al. 2021, taming's ``calculate_adaptive_weight``):
    ||grad nll|| / (||grad g|| + 1e-4), clamped to [0, max_weight] and detached.

    Both losses must still have their graphs; they are kept (retain_graph) for the real backward.
    """
    (nll_grad,) = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------------
# FastGAN: hinge with jittered margins, and the discriminator's self-supervised reconstruction
# ---------------------------------------------------------------------------------------------


def d_hinge_margins(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_margin: torch.Tensor, fake_margin: torch.Tensor
) -> tuple[torch.Tensor, Parts]:
    """max(0, m_r - D(x)) + max(0, m_f + D(G(z))), margins drawn per logit (FastGAN's train.py:
    ``F.relu(torch.rand_like(pred) * 0.2 + 0.8 - pred)``); margins of 1 make it ``d_hinge``."""
    real = F.relu(real_margin - real_logits).mean()
    fake = F.relu(fake_margin + fake_logits).mean()
    return real + fake, {"d_real": real.detach(), "d_fake": fake.detach()}


def quadrant(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quarter ``part`` of (B, C, H, W): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    top, left = (part // 2) * h, (part % 2) * w
    return x[:, :, top : top + h, left : left + w]


def downscale(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, side, side) by area averaging (a box filter for power-of-two factors)."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="area")


def fastgan_reconstruction(
    recons: dict[str, torch.Tensor], real: torch.Tensor, part: int, weight: float = 1.0
) -> tuple[torch.Tensor, Parts]:
    """weight * (MSE(whole, real) + MSE(part, quadrant ``part`` of real) + MSE(small, real)), each
    target the real batch D saw, box-downscaled to its reconstruction's side.

    ``recons``: the discriminator's decoders' outputs, (B, C, s, s) each: ``whole`` from D's 8x8
    features, ``part`` from quadrant ``part`` of its 16x16 features, ``small`` from the 8x8
    features of its low-resolution branch. FastGAN sums LPIPS distances here; MSE is
    lightweight-gan's offline stand-in.
    """
    targets = {"whole": real, "part": quadrant(real, part), "small": real}
    parts: Parts = {}
    total = real.new_zeros((), dtype=torch.float32)
    for name, recon in recons.items():
        term = F.mse_loss(recon.float(), downscale(targets[name], recon.shape[-1]).float())
        parts[f"recon_{name}"] = term.detach()
        total = total + term
    return weight * total, parts
