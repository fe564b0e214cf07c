"""The emoji named dataset: labels from emoji.json, skin tones in their base's category, exact
compositing on white, and one clear error for each way the folder can be broken."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.data import describe, fetch, load_dataset, named
from genforge.data.emoji import IMAGE_DIR, open_emoji
from genforge.errors import GenforgeError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# (R, G, B, A) -> on white: round((c * a + 255 * (255 - a)) / 255), worked by hand
HALF = (10, 100, 200, 128)  # -> (132, 177, 227): e.g. R (1280 + 32385) / 255 = 132.02
HALF_ON_WHITE = (132, 177, 227)


def rgba_image(colour: tuple[int, int, int, int]) -> np.ndarray:
    """4x4 RGBA: pixel (0, 0) ``colour``, (0, 1) fully transparent red-ish, (0, 2) opaque red,
    (0, 3) nearly transparent black, the rest opaque ``colour`` without its alpha."""
    image = np.zeros((4, 4, 4), np.uint8)
    image[...] = (*colour[:3], 255)
    image[0, 0] = colour
    image[0, 1] = (37, 99, 3, 0)
    image[0, 2] = (255, 0, 0, 255)
    image[0, 3] = (0, 0, 0, 1)
    return image


def entry(image: str, category: str, has_img: bool = True, variants: dict | None = None) -> dict:
    item = {"image": image, "category": category, "has_img_google": has_img, "short_name": image[:-4]}
    if variants is not None:
        item["skin_variations"] = variants
    return item


def variant(image: str, has_img: bool = True) -> dict:
    return {"image": image, "has_img_google": has_img}


def write_package(folder: Path) -> Path:
    """A mini emoji-datasource-google: 2 categories with images, one without, variants with and
    without images, an LA and a palette image with transparency as in the real package."""
    images = folder / IMAGE_DIR
    images.mkdir(parents=True)
    Image.fromarray(rgba_image(HALF)).save(images / "b-smile.png")
    Image.fromarray(rgba_image((0, 0, 255, 255))).save(images / "c-wave.png")
    Image.fromarray(rgba_image((0, 255, 0, 64))).save(images / "c-wave-1f3fb.png")
    grey = np.zeros((4, 4, 2), np.uint8)  # (H, W, L + A): grey 90, row 1 fully transparent
    grey[..., 0], grey[..., 1], grey[1, :, 1] = 90, 255, 0
    Image.fromarray(grey).save(images / "a-grey.png")
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(images / "d-palette.png", transparency=0)  # index 0 is fully transparent
    listing = [
        entry("b-smile.png", "Smileys & Emotion"),
        entry(
            "c-wave.png",
            "People & Body",
            variants={"1F3FB": variant("c-wave-1f3fb.png"), "1F3FC": variant("c-wave-1f3fc.png", has_img=False)},
        ),
        entry("z-flag.png", "Flags", has_img=False),  # no Google image and no file: skipped
        entry("a-grey.png", "Symbols"),
        entry("d-palette.png", "Symbols"),
    ]
    (folder / "emoji.json").write_text(json.dumps(listing))
    return folder


def test_labels_variants_and_order(tmp_path):
    images, labels, class_names = open_emoji(write_package(tmp_path / "emoji"), "train")
    assert class_names == ["People & Body", "Smileys & Emotion", "Symbols"]  # Flags has no image
    assert images.dtype == np.uint8 and images.shape == (5, 4, 4, 3)
    # by file name ('-' sorts before '.'): a-grey, b-smile, c-wave-1f3fb (its base's category), c-wave, d-palette
    np.testing.assert_array_equal(labels, [2, 1, 0, 0, 2])


def test_composited_on_white_exactly(tmp_path):
    images, _, _ = open_emoji(write_package(tmp_path / "emoji"), "all")
    smile, variant_image = images[1], images[2]
    assert tuple(smile[0, 0]) == HALF_ON_WHITE
    assert tuple(smile[0, 1]) == (255, 255, 255)  # alpha 0: white whatever the colour
    assert tuple(smile[0, 2]) == (255, 0, 0)  # opaque: the colour itself
    assert tuple(smile[0, 3]) == (254, 254, 254)  # 255 * 254 / 255
    assert tuple(smile[1, 1]) == (10, 100, 200)
    # (0, 255, 0) at alpha 64: R = B = 255 * 191 / 255 = 191, G = 255
    assert tuple(variant_image[0, 0]) == (191, 255, 191)


def test_grey_alpha_and_palette_transparency(tmp_path):
    images, _, _ = open_emoji(write_package(tmp_path / "emoji"), "train")
    grey, palette = images[0], images[4]
    np.testing.assert_array_equal(grey[:2, :2, 0], [[90, 90], [255, 255]])  # LA: alpha 0 -> white
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()
    assert tuple(palette[0, 0]) == (255, 255, 255) and tuple(palette[1, 1]) == (40, 80, 120)


def test_named_dataset_loads_and_describes(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_DATA", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(named, "SYSTEM_DATA_DIR", tmp_path / "system")
    write_package(tmp_path / "store" / "emoji")
    data = load_dataset("emoji", split="all")
    assert len(data) == 5 and data.num_classes == 3 and data.source.startswith("emoji (")
    assert describe(data)["class_counts"] == {"People & Body": 2, "Smileys & Emotion": 1, "Symbols": 2}
    assert str(tmp_path / "store" / "emoji") in fetch("emoji")
    with pytest.raises(GenforgeError, match="emoji set has no test split; use split 'train' or 'all'"):
        load_dataset("emoji", split="test")


def test_missing_dataset_says_run_fetch_script(tmp_path, monkeypatch):
    monkeypatch.delenv("GENFORGE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(named, "SYSTEM_DATA_DIR", tmp_path / "system")
    (tmp_path / "cache" / "genforge" / "data" / "emoji" / IMAGE_DIR).mkdir(parents=True)  # no emoji.json
    with pytest.raises(GenforgeError, match=r"dataset 'emoji' not found \(searched .*scripts/fetch-emoji.sh"):
        load_dataset("emoji")
    with pytest.raises(GenforgeError, match="genforge does not download data: run scripts/fetch-emoji.sh"):
        fetch("emoji")


def test_listed_image_missing_is_one_error(tmp_path):
    folder = write_package(tmp_path / "emoji")
    (folder / IMAGE_DIR / "c-wave-1f3fb.png").unlink()
    with pytest.raises(GenforgeError, match=r"c-wave-1f3fb.png: listed in emoji.json but cannot be read"):
        open_emoji(folder, "train")


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"image": "a.png", "categ', r"emoji.json: not a readable emoji list \(.*\); run scripts/fetch-emoji.sh"),
        ('{"image": "a.png"}', "emoji.json: expected a JSON list of emoji, got dict"),
        ('[{"image": "a.png"}]', "emoji.json: entry 0 has no 'image' and 'category'"),
        ('[{"image": "a.png", "category": "X", "skin_variations": [1]}]', r"entry 0 \(a.png\) has malformed"),
        ('[{"image": "a.png", "category": "X", "has_img_google": false}]', "lists no emoji with a Google image"),
    ],
)
def test_corrupt_emoji_json(tmp_path, content, message):
    folder = write_package(tmp_path / "emoji")
    (folder / "emoji.json").write_text(content)
    with pytest.raises(GenforgeError, match=message):
        open_emoji(folder, "train")


def test_corrupt_png_names_the_file(tmp_path):
    folder = write_package(tmp_path / "emoji")
    (folder / IMAGE_DIR / "b-smile.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(GenforgeError, match=r"b-smile.png: not a readable image"):
        open_emoji(folder, "train")


def run_fetch_script(tmp_path: Path, genforge_data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENFORGE_DATA": str(genforge_data), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(["sh", str(SCRIPTS / "fetch-emoji.sh")], env=env, capture_output=True, text=True)


def test_fetch_script_keeps_a_complete_copy_and_refuses_a_partial_one(tmp_path):
    folder = tmp_path / "store" / "emoji"
    (folder / IMAGE_DIR).mkdir(parents=True)
    (folder / "emoji.json").write_text("[]")
    for i in range(3786):
        (folder / IMAGE_DIR / f"{i}.png").touch()
    done = run_fetch_script(tmp_path, tmp_path / "store")
    assert done.returncode == 0 and f"emoji: found in {folder} (3786 images)" in done.stdout
    (folder / IMAGE_DIR / "0.png").unlink()
    partial = run_fetch_script(tmp_path, tmp_path / "store")
    assert partial.returncode == 1 and "not a complete copy (3785 of 3786 images); remove it" in partial.stderr
    assert sorted(p.name for p in folder.parent.iterdir()) == ["emoji"]  # nothing half-made beside it


@pytest.mark.skipif(
    named.locate("emoji") is None, reason="the emoji dataset is not installed (run scripts/fetch-emoji.sh)"
)
def test_real_emoji():
    data = load_dataset("emoji")
    assert data.images.shape == (3786, 64, 64, 3) and data.num_classes == 10
    assert data.class_names[0] == "Activities" and data.class_names[-1] == "Travel & Places"
    counts = describe(data)["class_counts"]
    assert counts["People & Body"] == 2261 and counts["Component"] == 5 and sum(counts.values()) == 3786
    corners = data.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (N, 4, 3): transparent corners -> white
    assert (corners == 255).all(axis=2).mean() > 0.5
