"""The folder cache: an image folder is decoded once, reused until a file changes, written
atomically under genforge's cache root, and holds exactly the pixels a direct decode gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genforge.data.cache as folder_cache
import genforge.data.imagefiles as imagefiles
from genforge.data import PackedImages, load_dataset, open_dataset
from genforge.data.cache import folder_cache_dir
from genforge.data.readers import read_path
from genforge.data.transforms import convert_channels, fit_images
from genforge.errors import GenforgeError

RNG = np.random.default_rng(3)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def photo_folder(root: Path) -> Path:
    """Two classes, grey and colour, two sizes: the set reads as RGB and needs a fit."""
    folder = root / "photos"
    for i in range(4):
        save(folder / "cat" / f"{i}.png", RNG.integers(0, 256, (6, 6, 1), dtype=np.uint8))
    for i in range(3):
        save(folder / "dog" / f"{i}.png", RNG.integers(0, 256, (8, 5, 3), dtype=np.uint8))
    return folder


class Decodes:
    """Counts the images decoded from their files."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = imagefiles.decode_image

        def decode(data, name):
            self.count += 1
            return original(data, name)

        monkeypatch.setattr(imagefiles, "decode_image", decode)


def caches() -> list[str]:
    folder = folder_cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "options",
    [
        {"resolution": 6, "fit": "resize"},
        {"resolution": 8, "fit": "pad", "channels": 1},
        {"resolution": 4, "fit": "center-crop"},
    ],
)
def test_second_load_reads_the_cache_with_the_pixels_of_a_direct_decode(tmp_path, cache, monkeypatch, options):
    folder = photo_folder(tmp_path)
    images, labels, class_names = read_path(folder, "train")  # the direct decode, no cache involved
    direct = convert_channels(fit_images(images, options["resolution"], options["fit"]), options.get("channels"))
    decodes = Decodes(monkeypatch)
    first = load_dataset(str(folder), **options)
    assert decodes.count == 7
    [name] = caches()
    assert (cache / "folders" / name).is_dir() and name.startswith("photos-")
    second = load_dataset(str(folder), **options)
    assert decodes.count == 7  # nothing decoded again
    for data in (first, second):
        np.testing.assert_array_equal(data.images, direct)
        np.testing.assert_array_equal(data.labels, labels)
        assert data.class_names == class_names == ["cat", "dog"] and data.source == str(folder)
    handle = open_dataset(str(folder), **options)  # training's entry point: a handle on the cache
    assert isinstance(handle, PackedImages) and handle.source == str(folder) and decodes.count == 7
    np.testing.assert_array_equal(handle.take([6, 0, 3]), direct[[6, 0, 3]])


def test_a_touched_or_added_file_rebuilds_it_and_drops_the_old_cache(tmp_path, cache, monkeypatch):
    folder = photo_folder(tmp_path)
    decodes = Decodes(monkeypatch)
    load_dataset(str(folder), resolution=6, fit="resize")
    [before] = caches()
    # the same bytes with a new modification time: decoded again
    stat = (folder / "cat" / "1.png").stat()
    os.utime(folder / "cat" / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset(str(folder), resolution=6, fit="resize")
    assert decodes.count == 14
    [touched] = caches()
    assert touched != before
    # a new image, in a new class: the cache holds it and its label
    new = np.full((6, 6, 3), 200, np.uint8)
    save(folder / "emu" / "0.png", new)
    data = load_dataset(str(folder), resolution=6, fit="resize")
    assert decodes.count == 22 and len(data) == 8 and data.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(data.images[7], new)
    assert data.labels[7] == 2 and len(caches()) == 1
    # another request (size, limit) is a cache of its own, beside the first
    assert len(load_dataset(str(folder), resolution=4, fit="resize", limit=3)) == 3
    assert decodes.count == 25 and len(caches()) == 2
    assert len(load_dataset(str(folder), resolution=6, fit="resize", limit=100)) == 8  # all: the first cache
    assert decodes.count == 25 and len(caches()) == 2


def test_fit_none_shares_one_cache_whatever_the_resolution_asked(tmp_path, cache, monkeypatch):
    folder = tmp_path / "same"
    images = RNG.integers(0, 256, (3, 5, 5, 1), dtype=np.uint8)
    for i, image in enumerate(images):
        save(folder / f"{i}.png", image)
    decodes = Decodes(monkeypatch)
    np.testing.assert_array_equal(load_dataset(str(folder)).images, images)
    np.testing.assert_array_equal(load_dataset(str(folder), resolution=5, fit="none").images, images)
    with pytest.raises(GenforgeError, match="images are 5x5 but resolution 8 was asked; pass fit"):
        load_dataset(str(folder), resolution=8, fit="none")
    assert decodes.count == 3 and len(caches()) == 1


def test_a_killed_build_leaves_no_cache_and_a_bad_file_is_one_error(tmp_path, cache, monkeypatch, capsys):
    folder = photo_folder(tmp_path)
    original = imagefiles.decode_image
    seen = []

    def killed(data, name):
        seen.append(name)
        if len(seen) == 5:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the first start
        return original(data, name)

    monkeypatch.setattr(imagefiles, "decode_image", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(str(folder), resolution=6, fit="resize")
    assert caches() == []  # not even a hidden temporary: the writer cleaned up
    monkeypatch.setattr(imagefiles, "decode_image", original)
    (folder / "dog" / "2.png").write_bytes(b"\x89PNG broken")
    capsys.readouterr()
    with pytest.raises(GenforgeError, match="dog/2.png: not a readable image"):
        load_dataset(str(folder), resolution=6, fit="resize")
    assert caches() == [] and capsys.readouterr().err == ""  # no progress line before the error's
    (folder / "dog" / "2.png").unlink()
    assert len(load_dataset(str(folder), resolution=6, fit="resize")) == 6 and len(caches()) == 1


def test_a_damaged_cache_is_decoded_again(tmp_path, cache, monkeypatch):
    folder = photo_folder(tmp_path)
    expected = load_dataset(str(folder), resolution=6, fit="resize").images
    [name] = caches()
    with open(folder_cache_dir() / name / "images.u8", "r+b") as f:
        f.truncate(10)
    decodes = Decodes(monkeypatch)
    np.testing.assert_array_equal(load_dataset(str(folder), resolution=6, fit="resize").images, expected)
    assert decodes.count == 7 and caches() == [name]


def test_a_zip_is_cached_too(tmp_path, cache, monkeypatch):

    folder = photo_folder(tmp_path)
    archive = shutil.make_archive(str(tmp_path / "photos"), "zip", tmp_path, "photos")
    decodes = Decodes(monkeypatch)
    first = load_dataset(archive, resolution=6, fit="resize")
    second = load_dataset(archive, resolution=6, fit="resize")
    assert decodes.count == 7
    np.testing.assert_array_equal(first.images, load_dataset(str(folder), resolution=6, fit="resize").images)
    np.testing.assert_array_equal(second.images, first.images)


def test_a_cache_finished_by_another_process_meanwhile_is_used(tmp_path, cache, monkeypatch):
    folder = photo_folder(tmp_path)
    pack = folder_cache.pack_files
    builds = []

    def racing(files, out, options, **kwargs):
        pack(files, out, options, source="the other rank")  # another rank of the job wins the race ...
        builds.append(out)
        return pack(files, out, options, **kwargs)  # ... and this one finds the cache there at its end

    monkeypatch.setattr(folder_cache, "pack_files", racing)
    data = load_dataset(str(folder), resolution=6, fit="resize")
    assert len(builds) == 1 and len(data) == 7 and len(caches()) == 1
