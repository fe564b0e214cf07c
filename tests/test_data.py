"""The data layer: every format round-trips exact pixels and labels; every bad input is one clear error."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.data import FITS, NAMED_DATASETS, ImageData, dataset_key, describe, fetch, load_dataset, named
from genforge.errors import GenforgeError

RNG = np.random.default_rng(0)
FASHION = Path("/usr/share/datasets/fashion-mnist")


def random_images(n, h, w, c):
    return RNG.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def save_image(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = array[:, :, 0] if array.shape[2] == 1 else array
    Image.fromarray(picture).save(path, **kwargs)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, count: int | None = None) -> Path:
    """Tiny IDX writer: magic 0x0000 08 ndim, big-endian int32 dims, then the bytes."""
    dims = list(array.shape)
    if count is not None:  # lie about the item count, for the truncation test
        dims[0] = count
    header = struct.pack(">I", magic if magic is not None else 0x0800 | array.ndim) + struct.pack(
        f">{len(dims)}I", *dims
    )
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist_folder(folder: Path, gz: bool, n_train=5, n_test=3, size=(4, 3)) -> tuple[np.ndarray, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, test_x = random_images(n_train, *size, 1)[..., 0], random_images(n_test, *size, 1)[..., 0]
    train_y, test_y = RNG.integers(0, 10, n_train).astype(np.uint8), RNG.integers(0, 10, n_test).astype(np.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train_x)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", train_y)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test_x)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", test_y)
    return train_x, train_y, test_x, test_y


def cifar10_batches(n_per_batch=3, n_batches=2):
    """CIFAR-10 layout: rows of 3072 bytes (1024 R, 1024 G, 1024 B), labels a list, as the real files."""
    batches = {}
    for i in range(n_batches):
        batches[f"data_batch_{i + 1}"] = {
            "data": random_images(n_per_batch, 1, 3072, 1)[:, 0, :, 0],
            "labels": list(RNG.integers(0, 10, n_per_batch).tolist()),
        }
    batches["test_batch"] = {"data": random_images(2, 1, 3072, 1)[:, 0, :, 0], "labels": [9, 0]}
    batches["batches.meta"] = {
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    }
    return batches


def as_nhwc(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def write_cifar_folder(folder: Path, batches: dict) -> Path:
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))  # protocol 2, like the Python 2 originals
    return folder


# ---------------------------------------------------------------- image folders, JPEG, zip


def test_image_folder_grey_classes_roundtrip(tmp_path):
    cats, dogs = random_images(2, 5, 4, 1), random_images(3, 5, 4, 1)
    for i, im in enumerate(dogs):
        save_image(tmp_path / "dog" / f"{i}.png", im)
    for i, im in enumerate(cats):
        save_image(tmp_path / "cat" / "nested" / f"{i}.png", im)  # the top-level folder is the class
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (5, 5, 4, 1) and data.channels == 1
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.images, np.concatenate([cats, dogs]))


def test_image_folder_rgb_rgba_palette_and_grey_promote_to_rgb(tmp_path):
    rgb, rgba, grey = random_images(1, 4, 4, 3)[0], random_images(1, 4, 4, 4)[0], random_images(1, 4, 4, 1)[0]
    save_image(tmp_path / "a.png", rgb)
    save_image(tmp_path / "b.png", rgba)
    save_image(tmp_path / "c.png", grey)
    palette = Image.fromarray(rgb).quantize(colors=8)
    palette.save(tmp_path / "d.png")
    data = load_dataset(str(tmp_path))
    assert data.labels is None and data.class_names is None and data.images.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(data.images[0], rgb)
    np.testing.assert_array_equal(data.images[1], rgba[:, :, :3])  # alpha dropped
    np.testing.assert_array_equal(data.images[2], np.repeat(grey, 3, axis=2))  # grey joins RGB
    np.testing.assert_array_equal(data.images[3], np.asarray(palette.convert("RGB")))


def test_jpeg_matches_pil_decode(tmp_path):
    save_image(tmp_path / "x.jpg", random_images(1, 8, 8, 3)[0], quality=95)
    save_image(tmp_path / "y.jpeg", np.full((8, 8, 3), 200, np.uint8), quality=100)
    data = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(data.images[0], np.asarray(Image.open(tmp_path / "x.jpg")))
    assert np.abs(data.images[1].astype(int) - 200).max() <= 1  # lossy, but a flat colour survives


def test_zip_with_wrapping_folder_and_classes(tmp_path):
    images = random_images(3, 4, 4, 3)
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, (cls, im) in enumerate(zip(["dog", "cat", "dog"], images)):
            buffer = io.BytesIO()
            Image.fromarray(im).save(buffer, format="PNG")
            zf.writestr(f"pets/{cls}/{i}.png", buffer.getvalue())
        zf.writestr("__MACOSX/pets/._0.png", b"finder junk")
    data = load_dataset(str(archive))
    assert data.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(data.labels, [0, 1, 1])  # cat/1.png, dog/0.png, dog/2.png
    np.testing.assert_array_equal(data.images, images[[1, 0, 2]])


def test_flat_zip_has_no_labels(tmp_path):
    images = random_images(2, 3, 3, 1)
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as zf:
        for i, im in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(im[:, :, 0]).save(buffer, format="PNG")
            zf.writestr(f"{i}.png", buffer.getvalue())
    data = load_dataset(str(tmp_path / "flat.zip"), split="all")
    assert data.labels is None
    np.testing.assert_array_equal(data.images, images)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_splits_roundtrip(tmp_path, gz):
    train_x, train_y, test_x, test_y = write_mnist_folder(tmp_path / "mnistish", gz)
    train = load_dataset(str(tmp_path / "mnistish"))
    test = load_dataset(str(tmp_path / "mnistish"), split="test")
    both = load_dataset(str(tmp_path / "mnistish"), split="all")
    np.testing.assert_array_equal(train.images[..., 0], train_x)
    np.testing.assert_array_equal(train.labels, train_y)
    np.testing.assert_array_equal(test.images[..., 0], test_x)
    np.testing.assert_array_equal(test.labels, test_y)
    assert len(both) == 8 and both.labels.dtype == np.int64 and train.images.shape == (5, 4, 3, 1)


def test_single_idx_file_with_and_without_sibling_labels(tmp_path):
    images, labels = random_images(4, 3, 3, 1)[..., 0], np.array([1, 0, 2, 1], np.uint8)
    write_idx(tmp_path / "extra-images-idx3-ubyte.gz", images)
    data = load_dataset(str(tmp_path / "extra-images-idx3-ubyte.gz"))
    assert data.labels is None
    np.testing.assert_array_equal(data.images[..., 0], images)
    write_idx(tmp_path / "extra-labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "extra-images-idx3-ubyte.gz")).labels, labels)


def test_idx_truncated(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", random_images(3, 4, 4, 1)[..., 0], count=10)
    with pytest.raises(GenforgeError, match=r"train-images-idx3-ubyte: truncated IDX file: header says 10 items"):
        load_dataset(str(tmp_path))


def test_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", random_images(50, 8, 8, 1)[..., 0])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GenforgeError, match="corrupt or truncated gzip"):
        load_dataset(str(tmp_path))


def test_idx_bad_magic(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", random_images(2, 4, 4, 1)[..., 0], magic=0x12345678)
    with pytest.raises(GenforgeError, match=r"not an IDX file \(bad magic number 0x12345678"):
        load_dataset(str(tmp_path / "train-images-idx3-ubyte"))


def test_idx_label_count_mismatch(tmp_path):
    write_mnist_folder(tmp_path, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(GenforgeError, match="holds 4 labels but train-images-idx3-ubyte.gz holds 5 images"):
        load_dataset(str(tmp_path))


def test_idx_label_file_is_not_images(tmp_path):
    write_idx(tmp_path / "y-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(GenforgeError, match="is an IDX label file, not images"):
        load_dataset(str(tmp_path / "y-labels-idx1-ubyte"))


# ---------------------------------------------------------------- CIFAR


def test_cifar10_folder_roundtrip(tmp_path):
    batches = cifar10_batches()
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    train = load_dataset(str(folder))
    assert train.images.shape == (6, 32, 32, 3) and train.class_names[9] == "truck"
    np.testing.assert_array_equal(
        train.images, as_nhwc(np.concatenate([batches["data_batch_1"]["data"], batches["data_batch_2"]["data"]]))
    )
    np.testing.assert_array_equal(train.labels, batches["data_batch_1"]["labels"] + batches["data_batch_2"]["labels"])
    # plane layout: row[0] is R of pixel (0, 0), row[1024] its G, row[2048] its B
    row = batches["data_batch_1"]["data"][0]
    assert tuple(train.images[0, 0, 0]) == (row[0], row[1024], row[2048])
    test = load_dataset(str(folder), split="test")
    np.testing.assert_array_equal(test.labels, [9, 0])
    assert len(load_dataset(str(folder), split="all")) == 8


def test_cifar10_targz_read_without_extracting(tmp_path):
    batches = cifar10_batches(n_batches=1)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, batch in batches.items():
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    data = load_dataset(str(archive), split="all")
    np.testing.assert_array_equal(data.images[:3], as_nhwc(batches["data_batch_1"]["data"]))
    np.testing.assert_array_equal(data.labels, batches["data_batch_1"]["labels"] + [9, 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar100_folder_fine_labels(tmp_path):
    rows = random_images(2, 1, 3072, 1)[:, 0, :, 0]
    batches = {
        b"train": {b"data": rows, b"fine_labels": [3, 1], b"coarse_labels": [0, 0]},  # bytes keys also work
        "test": {"data": rows[:1], "fine_labels": [2], "coarse_labels": [0]},
        "meta": {"fine_label_names": ["apple", "bear", "cup", "dog"], "coarse_label_names": ["x"]},
    }
    folder = write_cifar_folder(
        tmp_path / "cifar-100-python", {(k.decode() if isinstance(k, bytes) else k): v for k, v in batches.items()}
    )
    data = load_dataset(str(folder))
    np.testing.assert_array_equal(data.images, as_nhwc(rows))
    np.testing.assert_array_equal(data.labels, [3, 1])
    assert data.class_names == ["apple", "bear", "cup", "dog"]


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    batches = cifar10_batches(n_batches=1)
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": []}, protocol=2))
    with pytest.raises(
        GenforgeError, match=r"data_batch_1: refusing to unpickle it \(refused global (__builtin__|builtins)\.print\)"
    ):
        load_dataset(str(folder))


# ---------------------------------------------------------------- npz


@pytest.mark.parametrize(
    "layout, channels",
    [("nhw", 1), ("nhwc", 1), ("nhwc", 3), ("nchw", 1), ("nchw", 3)],
)
@pytest.mark.parametrize("keys", [("images", "labels"), ("x", "y"), ("arr_0", "arr_1")])
def test_npz_layouts_and_keys(tmp_path, layout, channels, keys):
    images = random_images(3, 5, 4, channels)
    stored = {"nhw": images[..., 0], "nhwc": images, "nchw": images.transpose(0, 3, 1, 2)}[layout]
    labels = np.array([2, 0, 1])
    np.savez(tmp_path / "d.npz", **{keys[0]: stored, keys[1]: labels})
    data = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)


def test_npz_float_ranges(tmp_path):
    # [0, 1] maps by round(x * 255); [-1, 1] (any negative value) by round((x + 1) * 127.5)
    np.savez(tmp_path / "unit.npz", images=np.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1))
    np.savez(tmp_path / "signed.npz", images=np.array([-1.0, 0.0, 1.0]).reshape(1, 1, 3, 1))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "unit.npz")).images.ravel(), [0, 128, 255])
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "signed.npz")).images.ravel(), [0, 128, 255])
    np.savez(tmp_path / "wide.npz", images=np.array([0.0, 2.0]).reshape(1, 1, 2, 1))
    with pytest.raises(GenforgeError, match=r"float images must lie in \[0, 1\] or \[-1, 1\], found 0..2"):
        load_dataset(str(tmp_path / "wide.npz"))


def test_npz_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", images=random_images(3, 2, 2, 1), labels=np.array([0, 1]))
    with pytest.raises(GenforgeError, match="'labels' holds 2 labels but 'images' holds 3 images"):
        load_dataset(str(tmp_path / "d.npz"))


# ---------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    with pytest.raises(GenforgeError, match="nope: no such file or folder"):
        load_dataset(str(tmp_path / "nope"))


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(GenforgeError, match="no images found"):
        load_dataset(str(tmp_path))


def test_corrupt_png_names_the_file(tmp_path):
    save_image(tmp_path / "good.png", random_images(1, 4, 4, 1)[0])
    buffer = io.BytesIO()
    Image.fromarray(random_images(1, 16, 16, 3)[0]).save(buffer, format="PNG")
    (tmp_path / "bad.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(GenforgeError, match=r"^bad.png: not a readable image"):
        load_dataset(str(tmp_path))


def test_mixed_sizes_without_fit_names_two_sizes(tmp_path):
    save_image(tmp_path / "a.png", random_images(1, 4, 4, 1)[0])
    save_image(tmp_path / "b.png", random_images(1, 6, 5, 1)[0])
    with pytest.raises(GenforgeError, match=r"a.png is 4x4, b.png is 5x6\); pass a resolution and fit"):
        load_dataset(str(tmp_path))


def test_top_level_and_class_images_mixed(tmp_path):
    save_image(tmp_path / "a.png", random_images(1, 4, 4, 1)[0])
    save_image(tmp_path / "cat" / "b.png", random_images(1, 4, 4, 1)[0])
    with pytest.raises(GenforgeError, match="some images are at the top level"):
        load_dataset(str(tmp_path))


def test_unknown_format(tmp_path):
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(GenforgeError, match="data.csv: unknown data format"):
        load_dataset(str(tmp_path / "data.csv"))


def test_single_split_source_has_no_test_split(tmp_path):
    np.savez(tmp_path / "d.npz", images=random_images(2, 2, 2, 1))
    with pytest.raises(GenforgeError, match="has no test split"):
        load_dataset(str(tmp_path / "d.npz"), split="test")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fit": "stretch"}, "unknown fit 'stretch'; choose one of none, resize, center-crop, pad"),
        ({"channels": 4}, "channels must be 1 .grey. or 3 .RGB."),
        ({"resolution": 0}, "resolution must be a positive integer, got 0"),
        ({"resolution": -8, "fit": "pad"}, "resolution must be a positive integer, got -8"),
        ({"fit": "resize"}, "fit 'resize' needs a resolution"),
        ({"split": "val"}, "unknown split 'val'"),
        ({"limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_options_fail_before_reading(options, message):
    with pytest.raises(GenforgeError, match=message):
        load_dataset("/does/not/exist", **options)  # the option error wins: nothing is read


# ---------------------------------------------------------------- fits and channels


def npz_source(tmp_path, images, name="d.npz") -> str:
    np.savez(tmp_path / name, images=images)
    return str(tmp_path / name)


def test_fit_none_with_other_resolution_suggests_fit(tmp_path):
    with pytest.raises(GenforgeError, match="images are 4x4 but resolution 8 was asked; pass fit"):
        load_dataset(npz_source(tmp_path, random_images(2, 4, 4, 1)), resolution=8)
    assert load_dataset(npz_source(tmp_path, random_images(2, 4, 4, 1)), resolution=4).resolution == 4


def test_resize_shapes_and_flat_colour(tmp_path):
    images = np.full((3, 6, 6, 3), 77, np.uint8)
    for size in (3, 12):
        data = load_dataset(npz_source(tmp_path, images), resolution=size, fit="resize")
        assert data.images.shape == (3, size, size, 3) and (data.images == 77).all()


def test_resize_downsample_averages(tmp_path):
    images = np.zeros((1, 4, 4, 1), np.uint8)
    images[:, :, 2:] = 200  # left half black, right half bright
    out = load_dataset(npz_source(tmp_path, images), resolution=2, fit="resize").images[0, :, :, 0]
    assert (out[:, 0] < 100).all() and (out[:, 1] > 100).all() and out[0, 0] == out[1, 0]


def test_center_crop_takes_middle_square(tmp_path):
    images = random_images(2, 4, 6, 1)  # wide: columns 1..4 are the centred square
    data = load_dataset(npz_source(tmp_path, images), resolution=4, fit="center-crop")
    np.testing.assert_array_equal(data.images, images[:, :, 1:5])
    assert load_dataset(npz_source(tmp_path, images), resolution=2, fit="center-crop").images.shape == (2, 2, 2, 1)


def test_pad_centres_on_zeros(tmp_path):
    images = np.full((1, 2, 3, 1), 255, np.uint8)
    out = load_dataset(npz_source(tmp_path, images), resolution=5, fit="pad").images[0, :, :, 0]
    expected = np.zeros((5, 5), np.uint8)
    expected[1:3, 1:4] = 255
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(GenforgeError, match="images of 3x2 are larger than resolution 2; fit 'pad' only grows"):
        load_dataset(npz_source(tmp_path, images), resolution=2, fit="pad")


def test_mixed_sizes_fit_in_order(tmp_path):
    small, big = random_images(1, 2, 2, 1)[0], random_images(1, 4, 4, 1)[0]
    save_image(tmp_path / "a.png", small)
    save_image(tmp_path / "b.png", big)
    save_image(tmp_path / "c.png", small)
    data = load_dataset(str(tmp_path), resolution=4, fit="pad")
    np.testing.assert_array_equal(data.images[1], big)
    np.testing.assert_array_equal(data.images[0, 1:3, 1:3], small)
    np.testing.assert_array_equal(data.images[2], data.images[0])


def test_channels_conversion(tmp_path):
    rgb = random_images(3, 4, 4, 3)
    grey = load_dataset(npz_source(tmp_path, rgb), channels=1).images
    expected = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])[..., None]
    np.testing.assert_array_equal(grey, expected)  # ITU-R 601 luma, exactly as PIL computes it
    tiled = load_dataset(npz_source(tmp_path, grey, "g.npz"), channels=3).images
    np.testing.assert_array_equal(tiled, np.repeat(grey, 3, axis=3))


def test_limit_keeps_first(tmp_path):
    images = random_images(5, 2, 2, 1)
    np.testing.assert_array_equal(load_dataset(npz_source(tmp_path, images), limit=2).images, images[:2])


# ---------------------------------------------------------------- named datasets, describe, keys


def isolate_named(monkeypatch, tmp_path, genforge_data: Path | None = None):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(named, "SYSTEM_DATA_DIR", tmp_path / "system")
    if genforge_data is None:
        monkeypatch.delenv("GENFORGE_DATA", raising=False)
    else:
        monkeypatch.setenv("GENFORGE_DATA", str(genforge_data))


def test_named_dataset_from_genforge_data(tmp_path, monkeypatch):
    isolate_named(monkeypatch, tmp_path, tmp_path / "store")
    train_x, train_y, _, _ = write_mnist_folder(tmp_path / "store" / "fashion-mnist", gz=True)
    data = load_dataset("fashion-mnist")
    np.testing.assert_array_equal(data.images[..., 0], train_x)
    np.testing.assert_array_equal(data.labels, train_y)
    assert data.class_names[0] == "T-shirt/top" and data.num_classes == 10
    assert str(tmp_path / "store" / "fashion-mnist") in fetch("fashion-mnist")


def test_named_dataset_missing_says_how_to_install(tmp_path, monkeypatch):
    isolate_named(monkeypatch, tmp_path)
    with pytest.raises(GenforgeError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "cache" / "genforge" / "data" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "$GENFORGE_DATA/fashion-mnist" in message
    with pytest.raises(GenforgeError, match="genforge does not download data"):
        fetch("fashion-mnist")
    with pytest.raises(GenforgeError, match="unknown dataset name 'imagenet'"):
        fetch("imagenet")
    assert set(NAMED_DATASETS) >= {"fashion-mnist", "mnist"} and "pad" in FITS


def test_describe_and_dataset_key(tmp_path):
    images = np.array([0, 10, 20, 30], np.uint8).reshape(4, 1, 1, 1)
    data = ImageData(images=images, labels=np.array([0, 1, 1, 1]), class_names=["a", "b", "c"], source="x")
    info = describe(data)
    assert info["count"] == 4 and (info["height"], info["width"], info["channels"]) == (1, 1, 1)
    assert info["class_counts"] == {"a": 1, "b": 3, "c": 0} and info["num_classes"] == 3
    assert (info["min"], info["max"], info["mean"]) == (0, 30, 15.0)
    assert dataset_key("fashion-mnist", "train", 32, "pad", 1) == "fashion-mnist_train_32_pad_c1"
    key = dataset_key(str(tmp_path / "my data"), "all", None, "none", None)
    assert key.startswith("my-data-") and key.endswith("_all_native_none_cnative") and "/" not in key
    assert key == dataset_key(str(tmp_path / "my data"), "all", None, "none", None)
    assert key != dataset_key(str(tmp_path / "other" / "my data"), "all", None, "none", None)


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist(tmp_path, monkeypatch):
    isolate_named(monkeypatch, tmp_path)
    monkeypatch.setattr(named, "SYSTEM_DATA_DIR", FASHION.parent)
    train = load_dataset("fashion-mnist")
    test = load_dataset("fashion-mnist", split="test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.num_classes == 10 and train.class_names[9] == "Ankle boot"
    counts = np.bincount(train.labels, minlength=10)
    assert (np.abs(counts - 6000) <= 600).all()


def test_cifar_python2_pickle_as_in_the_real_files(tmp_path):
    # What cPickle (Python 2, protocol 2) wrote: a py2 str for the array bytes, numpy.core names
    row = bytes(range(256)) * 12
    batch = (
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b"
        b"\x87Rq\x04(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK\x00tb\x89T\x00\x0c\x00\x00" + row + b"tbU\x06labelsq\x07]q\x08K\x03au."
    )
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py", {"batches.meta": cifar10_batches()["batches.meta"]})
    (folder / "data_batch_1").write_bytes(batch)
    data = load_dataset(str(folder))
    np.testing.assert_array_equal(data.images, as_nhwc(np.frombuffer(row, np.uint8)[None]))
    np.testing.assert_array_equal(data.labels, [3])
