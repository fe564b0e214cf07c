"""The GAN family's run config: optimisation (losses, penalties, EMA), discriminator augmentation,
the whole run's sections, and the named presets (``genforge train gan --preset NAME``).

``families/gan.py`` declares the family with them; StyleGAN2 and FastGAN reuse the sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genforge.augment import AUGMENTS, PIPELINES
from genforge.config import (
    DataConfig,
    TrainConfig,
    check,
    fraction,
    non_negative,
    one_of,
    positive,
)
from genforge.errors import GenforgeError
from genforge.losses import GAN_LOSSES
from genforge.models.gan import DCGANConfig

AUGMENT_POLICIES = ("none", "diffaugment", "ada")


@dataclass
class GANOptimConfig:
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # a different rate for D is the two time-scale update rule (TTUR)
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update, each on its own real batch
    r1_gamma: float = 0.0  # R1 penalty weight on real data (0 = off)
    # lazy regularisation: R1 every N steps, weighted N times, as a D step of its own when N > 1 (StyleGAN2 uses 16)
    r1_interval: int = 1
    gp_weight: float = 10.0  # gradient penalty weight, used by wgan-gp
    # Path length regularisation (StyleGAN2; generators with a w space only). 0 = off.
    pl_weight: float = 0.0
    pl_interval: int = 4  # lazy: every N steps, weighted N times, as a G step of its own when N > 1
    pl_batch_shrink: int = 2  # its batch is the generator's divided by this
    pl_decay: float = 0.01  # how fast the running mean of path lengths moves
    ema_decay: float = 0.0  # EMA of the generator's weights for sampling, per step (0 = off)
    ema_start: int = 0  # steps before the EMA starts averaging (it copies until then)
    # EMA by images (StyleGAN2's ema_kimg): half-life in thousands of images, whatever the batch (0 = off;
    # excludes ema_decay). ema_rampup > 0 caps the half-life at that fraction of the images seen so far.
    ema_kimg: float = 0.0
    ema_rampup: float = 0.0
    # Mode seeking (Mao et al. 2019, MSGAN): G also minimises 1 / (mean|G(z2,y) - G(z1,y)| /
    # mean|z2 - z1| + 1e-5), two latents for the same classes, so that different z give
    # different images. The generator's last batch doubles (its twin). 0 = off.
    mode_seeking: float = 0.0

    def __post_init__(self):
        one_of(self, "loss", GAN_LOSSES)
        positive(self, "lr_g", "lr_d", "d_steps", "r1_interval", "pl_interval", "pl_batch_shrink")
        fraction(self, "beta1", "beta2", "ema_decay", "pl_decay")
        non_negative(self, "r1_gamma", "gp_weight", "ema_start", "mode_seeking", "pl_weight", "ema_kimg", "ema_rampup")
        check(
            self.ema_kimg == 0 or self.ema_decay == 0,
            "ema_kimg",
            "and ema_decay are two ways to set the EMA: set one of them to 0",
            self.ema_kimg,
        )

    @property
    def uses_ema(self) -> bool:
        """Whether the run keeps an EMA generator (G_ema), by steps or by images."""
        return self.ema_decay > 0 or self.ema_kimg > 0


@dataclass
class AugmentConfig:
    """What the discriminator sees: reals and fakes alike pass through the same random ops."""

    policy: str = "none"  # none | diffaugment (ops at probability p) | ada (p adapted to D's overfitting)
    # Which ops: diffaugment (DiffAugment's, those in `ops`) | ada (ADA's 'bgc': flips, quarter turns,
    # shifts, scaling, rotation, colour) | auto: the policy's own. Runs with policy ada from before
    # ADA's own ops existed used DiffAugment's: `migrate` gives them pipeline diffaugment.
    pipeline: str = "auto"
    ops: tuple[str, ...] = ("color", "translation", "cutout")  # the diffaugment pipeline's
    p: float = 1.0  # diffaugment: the probability of each op per image; ada: the starting p
    target: float = 0.6  # ada: the r_t = E[sign(D(real))] it holds
    interval: int = 4  # ada: steps between adjustments
    speed: int = 500_000  # ada: images for p to move from 0 to 1 (ADA's ada_kimg = 500)
    # x-flip each real image with probability 0.5 when drawn (stylegan2-ada's --mirror), for D and
    # for every loss on reals; only for data whose mirror image is as real (not text, not digits).
    # null: on for data without labels, off for labelled data (augment.default_mirror)
    mirror: bool | None = None

    def __post_init__(self):
        one_of(self, "policy", AUGMENT_POLICIES)
        one_of(self, "pipeline", ("auto", *PIPELINES))
        check(all(op in AUGMENTS for op in self.ops), "ops", f"must be among {', '.join(AUGMENTS)}", list(self.ops))
        check(0 <= self.p <= 1, "p", "must be in [0, 1]", self.p)
        check(0 < self.target < 1, "target", "must be in (0, 1)", self.target)
        positive(self, "interval", "speed")


@dataclass
class GANRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    conditional: bool = False  # train on the data's class labels: `genforge sample --class C`
    model: DCGANConfig = field(default_factory=DCGANConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check_penalties(self)
        if self.optim.pl_weight > 0:
            raise GenforgeError(
                "optim.pl_weight (path length regularisation) needs a generator with a w space: stylegan2"
            )


def check_penalties(cfg) -> None:
    """Losses and penalties that do not work with a batch-norm discriminator, refused at start-up."""
    if cfg.optim.loss == "wgan-gp" and getattr(cfg.model, "d_norm", None) == "batch":
        raise GenforgeError("optim.loss wgan-gp needs a critic without batch norm: set model.d_norm=none or spectral")
    # R1 penalises each real sample's own gradient; batch norm makes D(x_i) depend on the rest of
    # the batch, so the penalty would not be the per-sample quantity it claims to be.
    if cfg.optim.r1_gamma > 0 and getattr(cfg.model, "d_norm", None) == "batch":
        raise GenforgeError(
            "optim.r1_gamma needs a discriminator without batch norm (R1 is a per-sample penalty and "
            "batch norm mixes the samples of a batch): set model.d_norm=spectral or none"
        )


# Named starting points; `genforge train gan --preset NAME`. Values overlay the defaults above.
GAN_PRESETS: dict[str, dict[str, Any]] = {
    # DCGAN as the paper trains it: fp32, non-saturating loss, Adam 2e-4/0.5, no EMA.
    "dcgan": {"train": {"precision": "fp32", "channels_last": False, "batch_size": 128}},
    # genforge's default: the same networks with the measures that pay off on small budgets.
    "default": {"optim": {"ema_decay": 0.999}, "train": {"batch_size": 128}},
    # The default, conditioned on the data's classes (projection discriminator), with the
    # mode-seeking term at MSGAN's weight 1: without it the generator gives one image per class
    # (recall 0.0003 after 4 minutes on Fashion-MNIST; 0.17 with it; docs/benchmarks.md).
    "conditional": {
        "conditional": True,
        "optim": {"ema_decay": 0.999, "mode_seeking": 1.0},
        "train": {"batch_size": 128},
    },
    # Small data: the default with DiffAugment, or with ADA (its pipeline of ops, its adaptive probability).
    "diffaugment": {"optim": {"ema_decay": 0.999}, "augment": {"policy": "diffaugment"}, "train": {"batch_size": 128}},
    # ADA moves p across [0, 1] in `speed` images; its paper's 500k assume runs of millions of
    # images, where a CPU budget sees ~100k: p could not pass 0.2. 100k lets it respond in time.
    "ada": {
        "optim": {"ema_decay": 0.999},
        "augment": {"policy": "ada", "p": 0.0, "speed": 100_000},
        "train": {"batch_size": 128},
    },
    # Hinge loss + spectral-norm discriminator + TTUR (Miyato et al. 2018; Heusel et al. 2017).
    "hinge-sn": {
        "model": {"d_norm": "spectral"},
        "optim": {"loss": "hinge", "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "ema_decay": 0.999},
    },
    "wgan-gp": {
        "model": {"d_norm": "none"},
        "optim": {"loss": "wgan-gp", "d_steps": 5, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9},
    },
}
