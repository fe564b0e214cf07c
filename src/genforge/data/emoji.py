"""The Noto colour emoji of the npm package ``emoji-datasource-google``, labelled by category.

The folder is the package as ``scripts/fetch-emoji.sh`` extracts it:
    emoji.json              one entry per emoji: its image file, category and skin_variations
    img/google/64/*.png     64x64 RGBA (a few LA or palette-with-transparency) PNGs
    LICENSE, README.md      the package's MIT licence; its README puts the Noto images under Apache-2.0
Rules, checked against 16.0.0 (1,911 entries + 1,875 skin-tone variants = 3,786 images, 10 categories):
  - an entry or a variant is an image when its ``has_img_google`` is true; its file must then exist
  - a variant has no category of its own and takes its base emoji's
  - transparency is composited on white, round((c * a + 255 * (255 - a)) / 255) per channel
  - images are ordered by file name (code points): stable, but grouped (the flags run together),
    so a fair subset is drawn at random, not taken from the front
  - class names are the categories present, sorted
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from genforge.data.imagefiles import stack
from genforge.data.result import ReaderResult, check_result
from genforge.errors import GenforgeError

IMAGE_DIR = "img/google/64"
FETCH_HINT = "run scripts/fetch-emoji.sh to (re)install it"


def is_emoji_folder(folder: Path) -> bool:
    return (folder / "emoji.json").is_file() and (folder / IMAGE_DIR).is_dir()


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) -> (H, W, 3). Integer rounding: x / 255 is never exactly k + 0.5, so
    adding 127 before the floor division rounds to nearest with no tie to break."""
    assert rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 4, f"{rgba.dtype} {rgba.shape}"
    colour = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _decode_rgba(data: bytes, name: str) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 3) on white. LA and palette images with a transparent colour
    exist in the package too; converting to RGBA first treats all three alike."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgba = np.asarray(image.convert("RGBA"))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise GenforgeError(f"{name}: not a readable image ({error}); {FETCH_HINT}") from None
    return composite_on_white(rgba)


def _entries(path: Path) -> list[tuple[str, str]]:
    """emoji.json -> (image file, category) for every entry and skin-tone variant with a Google image."""
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenforgeError(f"{path}: not a readable emoji list ({error}); {FETCH_HINT}") from None
    if not isinstance(listing, list):
        raise GenforgeError(f"{path}: expected a JSON list of emoji, got {type(listing).__name__}; {FETCH_HINT}")
    found = []
    for number, entry in enumerate(listing):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str) and entry.get("category")):
            raise GenforgeError(f"{path}: entry {number} has no 'image' and 'category'; {FETCH_HINT}")
        variants = entry.get("skin_variations") or {}
        if not isinstance(variants, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("image"), str) for v in variants.values()
        ):
            raise GenforgeError(f"{path}: entry {number} ({entry['image']}) has malformed skin_variations")
        for item in [entry, *variants.values()]:
            if item.get("has_img_google") is True:
                found.append((item["image"], str(entry["category"])))
    return found


def open_emoji(folder: Path, split: str) -> ReaderResult:
    """The emoji package folder; one split: 'train' and 'all' are every image, 'test' an error."""
    if split == "test":
        raise GenforgeError(f"{folder}: the emoji set has no test split; use split 'train' or 'all'")
    entries = sorted(_entries(folder / "emoji.json"))
    if not entries:
        raise GenforgeError(f"{folder / 'emoji.json'}: lists no emoji with a Google image; {FETCH_HINT}")
    pictures = []
    for image, _ in entries:
        path = folder / IMAGE_DIR / image
        try:
            data = path.read_bytes()
        except OSError as error:
            raise GenforgeError(
                f"{path}: listed in emoji.json but cannot be read ({error.strerror}); {FETCH_HINT}"
            ) from None
        pictures.append(_decode_rgba(data, str(path)))
    class_names = sorted({category for _, category in entries})
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[category] for _, category in entries], np.int64)
    return check_result(stack(pictures, [image for image, _ in entries]), labels, class_names)
