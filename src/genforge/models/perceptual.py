"""Frozen feature networks for a perceptual reconstruction loss, from what genforge has offline.

LPIPS (Zhang et al. 2018) compares unit-normalised feature maps of a pretrained network through
learned per-channel weights; its backbones and heads are downloads. genforge has two networks
without any download, and uses their intermediate maps with every channel weighted the same
(``losses.perceptual_distance``):

- ``classifier``: a CNN of the evaluator's kind trained on the dataset's own labels (three
  stride-2 blocks at 32x32: about 0.01 s more per step of 64 images on a 2-core CPU, 3-4% of
  the default VQ-VAE's step). It is a second
  classifier, trained from another seed and cached beside the evaluator, not the evaluator
  itself: training a model to match images in the evaluator's exact feature space would flatter
  the Frechet distance that evaluator reports.
- ``inception``: the first blocks of the FID Inception network at 299x299: about 5 s per step of
  16 images on a 2-core CPU (50x the VQ-VAE's own step), so for a GPU.

The networks are frozen: no gradient reaches their weights, they stay in eval mode (BatchNorm
statistics fixed), no optimizer holds them and no checkpoint stores them. A run records a
fingerprint of the weights it trained with (``fingerprint``), so a resume with other weights is
refused instead of silently training on another loss.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

from genforge.errors import GenforgeError
from genforge.metrics.classifier import Classifier, fit_input
from genforge.metrics.extractors import train_evaluator
from genforge.metrics.inception import InceptionExtractor, resize_like_tf, weights_path
from genforge.progress import SILENT, Reporter

NETWORKS = ("classifier", "inception")
CLASSIFIER_SEED = 1  # the perceptual classifier's seed; the evaluator's is 0
INCEPTION_LAYERS = ("conv_2", "conv_4", "mixed", "mixed_2")  # 147, 71, 35, 35 px at 299 input


class FeatureMaps(nn.Module):
    """A frozen network: images (B, C, H, W) in [-1, 1] -> its feature maps at a few depths."""

    def freeze(self) -> FeatureMaps:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FeatureMaps:
        return super().train(False)  # BatchNorm statistics stay the trained ones

    def fingerprint(self) -> str:
        """sha256 of the weights and buffers: the same network, or not."""
        digest = hashlib.sha256()
        for name, value in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


class ClassifierMaps(FeatureMaps):
    """The outputs of a Classifier's three convolution blocks: (B, 24, 16, 16), (B, 48, 8, 8), (B, 96, 4, 4)."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.net = classifier
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = fit_input(x, self.net.config)
        maps = []
        for block in self.net.blocks:
            h = block(h)
            maps.append(h)
        return maps


class InceptionMaps(FeatureMaps):
    """Maps of the FID Inception network's first blocks (``INCEPTION_LAYERS``), input resized to 299."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # [-1, 1] -> the extractor's input range: uint8 / 128 - 1
        h = resize_like_tf((x + 1.0) * 127.5) / 128.0 - 1.0
        maps, wanted = [], set(INCEPTION_LAYERS)
        for name, layer in self.layers.named_children():
            h = layer(h)
            if name in wanted:
                maps.append(h)
                wanted.discard(name)
                if not wanted:
                    break
        return maps


def check_feature_maps(name: str, labelled: bool) -> None:
    """Refuse, before any work, a network that cannot be had: a classifier of unlabelled data, or
    Inception without its package."""
    if name == "classifier" and not labelled:
        raise GenforgeError(
            "optim.perceptual_net=classifier trains a classifier on the data's labels and this data has none; "
            "use optim.perceptual_net=inception"
        )
    if name == "inception":
        weights_path()  # the optional package's weights, or one clear error


def load_feature_maps(name: str, source: str, device: torch.device, reporter: Reporter = SILENT) -> FeatureMaps:
    """The frozen perceptual network ``name`` for data ``source`` (training its classifier once)."""
    if name == "classifier":
        classifier, _ = train_evaluator(source, device, reporter, seed=CLASSIFIER_SEED)
        return ClassifierMaps(classifier).to(device)
    if name == "inception":
        return InceptionMaps(InceptionExtractor(device).model.net.layers).to(device)
    raise GenforgeError(f"perceptual network must be one of {', '.join(NETWORKS)}, got {name!r}")
