"""What a family gives the training machinery: the interfaces ``training/`` calls, defined here
where they are called (``families/`` implements them, and ``families.registry`` re-exports them).

``Trainer`` is a base class: a family's trainer derives from it, implements the four required
methods, and overrides an optional hook only where it has something to say; the defaults are
no-ops, so the loop calls every hook without asking first. ``Prepared`` is what a family's
``prepare`` hands to training, and ``Family`` is the base class of a family as training calls it
(``families.registry.FamilySpec`` adds what the commands call).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge.config import DataConfig, from_dict
from genforge.progress import Reporter


@dataclass
class Prepared:
    """What ``prepare`` found: the config completed from the data, and the training examples."""

    config: Any
    images: Any  # uint8 (N, H, W, C) images (or a packed dataset); None until ``training_data`` makes them
    labels: np.ndarray | None
    num_classes: int | None = None
    data_config: DataConfig | None = None  # the real data samples are compared with (in-training evaluation)
    extras: dict[str, Any] = field(default_factory=dict)  # family-specific (the prior's VQ-VAE, ...)
    notes: list[str] = field(default_factory=list)  # one-line facts training prints at start (how data was fitted)
    mirror: bool = False  # x-flip each real image with probability 0.5 when drawn (the config's augment.mirror)
    # Config keys (dotted) the data decided because they were left null: a resumed run whose stored
    # value differs keeps the value it trained with (runs.train prepares again with it set).
    decided: tuple[str, ...] = ()


class Trainer(ABC):
    """The training loop's view of a family: built over one device, stepped by the loop.

    Required: ``device``, ``noise`` and the four abstract methods. Optional, with their defaults:
    ``extra_state`` / ``load_extra_state`` (nothing beyond modules, optimizers and RNGs),
    ``log_extras`` (nothing), ``watch`` (no warning), ``batches_per_step`` (1),
    ``state_records`` (none) and ``evaluation_samples`` (None: ``train.eval_every`` refused).
    """

    device: torch.device
    noise: torch.Generator  # the family's own random draws (checkpointed with the run)

    # How many batches one ``train_step`` takes, one after another along dim 0 (a GAN's d_steps).
    batches_per_step: int = 1
    # Entries of ``extra_state()``'s state that are values kept for the record (a config in the
    # words of its version): a resume checks that they are there, not what is inside them.
    state_records: ClassVar[frozenset[str]] = frozenset()
    # (n, generator) -> (n, C, H, W) in [-1, 1]: the images in-training evaluation scores
    # (``train.eval_every``); a family that generates images sets it (``= sample_grid``).
    evaluation_samples: Callable[[int, torch.Generator], torch.Tensor] | None = None

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Everything checkpointed, by name."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by name (checkpointed with its state)."""

    @abstractmethod
    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One optimisation step -> {loss name: tensor on the device} (the loop sums and logs them)."""

    @abstractmethod
    def sample_grid(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]: the pictures saved in samples/."""

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON state) beyond modules and optimizers that a resume must restore."""
        return {}, {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` wrote."""
        return None

    def log_extras(self) -> dict[str, float]:
        """Values logged beside the losses (e.g. ADA's augmentation probability)."""
        return {}

    def watch(self, losses: dict[str, float]) -> str | None:
        """A warning about the logged losses (shown once per distinct text), or None."""
        return None


class Family(ABC):
    """A model family, as training calls it: the base class of ``families.registry.FamilySpec``,
    which a family's own class derives from (``class GANFamily(FamilySpec)`` in families/gan.py), so
    ``spec.prepare`` leads to this declaration and from there to each family's implementation.

    ``prepare`` and ``build`` are required; the other hooks default to doing nothing, so training
    calls them without asking first.
    """

    name: ClassVar[str]  # the word on the command line and in checkpoints: `genforge train NAME`
    config_class: ClassVar[type]  # its run config: a dataclass of dataclasses with `train: TrainConfig`

    @abstractmethod
    def prepare(self, config: Any, reporter: Reporter) -> Prepared:
        """Load the data and fill in what the data decides (resolution, channels, classes); writes nothing."""

    @abstractmethod
    def build(self, prepared: Prepared, device: torch.device, dtype: torch.dtype) -> Trainer:
        """The modules, optimizers and ``train_step`` the loop drives."""

    def training_data(self, prepared: Prepared, run_dir: Path, device: torch.device, reporter: Reporter) -> None:
        """Make what training needs inside the locked run folder (the prior's code cache)."""
        return None

    def finish(
        self, run_dir: Path, prepared: Prepared, device: torch.device, reporter: Reporter
    ) -> dict[str, float] | None:
        """Work after training; scores returned are recorded as an "eval" record."""
        return None

    def migrate(self, config: dict[str, Any]) -> dict[str, Any]:
        """An old run's stored config -> today's keys (and the values it trained with)."""
        return config

    def config_of(self, c: ckpt.Checkpoint) -> Any:
        """The run config stored in a checkpoint, as today's config class (old runs migrated)."""
        return from_dict(self.config_class, self.migrate(c.config))
