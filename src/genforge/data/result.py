"""The reader contract: what every reader returns, asserted at the seam.

images: uint8 (N, H, W, C) with C in {1, 3}, or ``RaggedImages`` when an image folder or zip
holds pictures of differing sizes (transforms.fit_images turns those into one array).
labels: int64 (N,) or None. class_names: list[str] or None.
"""

from __future__ import annotations

import numpy as np

from genforge.errors import GenforgeError


class RaggedImages(list):
    """Images of differing sizes, uint8 (H, W, C) each, with the file each came from (for messages)."""

    def __init__(self, images: list[np.ndarray], names: list[str]):
        super().__init__(images)
        self.names = names


Images = np.ndarray | RaggedImages
ReaderResult = tuple[Images, np.ndarray | None, list[str] | None]


def check_result(images: Images, labels: np.ndarray | None, class_names: list[str] | None) -> ReaderResult:
    """Assert the reader contract at the seam, so a wrong reader fails here and not in training."""
    if isinstance(images, RaggedImages):
        assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] in (1, 3) for im in images)
        assert len({im.shape[2] for im in images}) == 1, "ragged images must share their channel count"
    else:
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] in (1, 3), (
            f"{images.dtype} {images.shape}"
        )
    if labels is not None:
        assert labels.dtype == np.int64 and labels.shape == (len(images),), f"{labels.dtype} {labels.shape}"
        assert len(labels) == 0 or labels.min() >= 0
        if class_names is not None and len(labels):
            assert labels.max() < len(class_names)
    return images, labels, class_names


def as_labels(values, name: str) -> np.ndarray:
    """Any integer sequence -> int64 (N,); a user error if it is not whole non-negative numbers."""
    array = np.asarray(values)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise GenforgeError(f"{name}: labels must be a 1-D array of integers, got {array.dtype} of shape {array.shape}")
    array = array.astype(np.int64)
    if len(array) and array.min() < 0:
        raise GenforgeError(f"{name}: labels must be >= 0, found {array.min()}")
    return array
