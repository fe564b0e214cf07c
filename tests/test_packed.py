"""Packed datasets: exact round trips, reads of just the asked images, atomic writes, one clear
error per broken file, content checksums, streaming packs and streaming summaries."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genforge.data as gdata
from genforge.data import (
    PackedImages,
    PackWriter,
    describe,
    draw_batch,
    load_dataset,
    open_dataset,
    pack_dataset,
    packed,
    rank_indices,
)
from genforge.errors import GenforgeError
from synthetic import cli, one_error
from test_data import isolate_named, write_mnist_folder

RNG = np.random.default_rng(1)


def random_images(n, h, w, c):
    return RNG.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def write_pack(out: Path, images: np.ndarray, labels=None, class_names=None, chunk=None) -> dict:
    with PackWriter(out, *images.shape[1:], class_names, source="test") as writer:
        step = chunk or len(images)
        for start in range(0, len(images), step):
            writer.append(images[start : start + step], None if labels is None else labels[start : start + step])
    return writer.summary


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class ReadLog:
    """Records every PackedImages.read(start, stop), to show what was read from disk."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = PackedImages.read

        def read(handle, start, stop):
            self.calls.append((start, stop))
            return original(handle, start, stop)

        monkeypatch.setattr(PackedImages, "read", read)


# ---------------------------------------------------------------- round trips and take()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("labelled", [True, False])
def test_round_trip_exact(tmp_path, channels, labelled):
    images = random_images(7, 5, 4, channels)
    labels = RNG.integers(0, 3, 7) if labelled else None
    names = ["a", "b", "c"] if labelled else None
    summary = write_pack(tmp_path / "p", images, labels, names)
    assert summary["count"] == 7 and summary["shape"] == [7, 5, 4, channels]
    assert summary["bytes"] == images.nbytes + (7 * 8 if labelled else 0)
    data = PackedImages(tmp_path / "p")
    assert len(data) == 7 and data.shape == (7, 5, 4, channels) and data.channels == channels
    np.testing.assert_array_equal(data.take(range(7)), images)
    assert data.class_names == names and (data.labels is None) == (not labelled)
    if labelled:
        assert data.labels.dtype == np.int64 and data.num_classes == 3
        np.testing.assert_array_equal(data.labels, labels)
    # the documented raw layout: anyone can memory-map it
    mapped = np.memmap(tmp_path / "p" / "images.u8", np.uint8, "r", shape=(7, 5, 4, channels))
    np.testing.assert_array_equal(mapped, images)
    header = json.loads((tmp_path / "p" / "header.json").read_text())
    assert header["format"] == "genforge-packed" and header["version"] == 1 and header["count"] == 7


def test_take_random_sorted_duplicate_and_empty(tmp_path):
    images = random_images(20, 3, 3, 3)
    write_pack(tmp_path / "p", images)
    data = PackedImages(tmp_path / "p")
    for index in ([3, 4, 5, 9], [17, 2, 2, 11, 0, 19], [5, 5, 5], RNG.permutation(20)[:8], np.array([], np.int64)):
        np.testing.assert_array_equal(data.take(index), images[np.asarray(index, dtype=np.int64)])
    assert data.take([]).shape == (0, 3, 3, 3)
    for _ in range(50):  # any mix of order, runs and repeats equals numpy's own indexing
        index = RNG.integers(0, 20, RNG.integers(0, 40))
        np.testing.assert_array_equal(data.take(index), images[index])
    with pytest.raises(IndexError, match="index 20 is out of range for 20"):
        data.take([1, 20])
    with pytest.raises(IndexError, match="index -1 is out of range"):
        data.take([-1])


def test_take_reads_coalesced_runs(tmp_path, monkeypatch):
    write_pack(tmp_path / "p", random_images(30, 2, 2, 1))
    data = PackedImages(tmp_path / "p")
    runs = []
    original = PackedImages._read_runs

    def read_runs(handle, out, asked):
        runs.extend(asked)
        original(handle, out, asked)

    monkeypatch.setattr(PackedImages, "_read_runs", read_runs)
    data.take([3, 4, 5, 20, 12, 13, 4])
    # (position in result, first image, count): file order; 3-5 and 12-13 are one read each,
    # the second 4 is copied, not read again
    assert runs == [(0, 3, 3), (4, 12, 2), (3, 20, 1)]
    runs.clear()
    data.take([5, 4, 3])  # neighbours on disk but not in the result: one read each
    assert runs == [(2, 3, 1), (1, 4, 1), (0, 5, 1)]


def test_chunked_writing_equals_one_shot(tmp_path):
    images, labels = random_images(11, 4, 4, 3), RNG.integers(0, 4, 11)
    write_pack(tmp_path / "one", images, labels, list("wxyz"))
    write_pack(tmp_path / "many", images, labels, list("wxyz"), chunk=3)
    for name in ("header.json", "images.u8", "labels.i64"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()


def test_handle_survives_pickling(tmp_path):
    images = random_images(4, 2, 2, 1)
    write_pack(tmp_path / "p", images)
    data = PackedImages(tmp_path / "p")
    data.take([0])  # opens the descriptor, which must not travel
    copy = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(copy.take([3, 1]), images[[3, 1]])


# ---------------------------------------------------------------- atomic writes, overwriting


def test_failure_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="source died"):
        with PackWriter(tmp_path / "p", 2, 2, 1) as writer:
            writer.append(random_images(3, 2, 2, 1))
            raise RuntimeError("source died")
    assert leftovers(tmp_path) == []
    with pytest.raises(GenforgeError, match="nothing to pack"):
        PackWriter(tmp_path / "p", 2, 2, 1).close()
    assert leftovers(tmp_path) == []


def test_wrong_shape_append_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(GenforgeError, match=r"do not fit this pack of uint8 \(n, 2, 2, 1\)"):
        with PackWriter(tmp_path / "p", 2, 2, 1) as writer:
            writer.append(random_images(3, 2, 2, 1))
            writer.append(random_images(1, 2, 3, 1))
    assert leftovers(tmp_path) == []


def test_refuses_to_overwrite_unless_asked(tmp_path):
    first, second = random_images(2, 2, 2, 1), random_images(3, 2, 2, 1)
    write_pack(tmp_path / "p", first)
    with pytest.raises(GenforgeError, match="p: already exists; choose another --out, or pass --overwrite"):
        PackWriter(tmp_path / "p", 2, 2, 1)
    with pytest.raises(GenforgeError, match="already exists"):
        pack_dataset("whatever-not-read", tmp_path / "p")  # refused before the source is even looked at
    with PackWriter(tmp_path / "p", 2, 2, 1, overwrite=True) as writer:
        writer.append(second)
    np.testing.assert_array_equal(PackedImages(tmp_path / "p").take(range(3)), second)
    assert leftovers(tmp_path) == ["p"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(GenforgeError, match="mine: exists and is not a packed dataset; refusing to replace it"):
        PackWriter(tmp_path / "mine", 2, 2, 1, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


# ---------------------------------------------------------------- broken packs: one error each


def broken(tmp_path: Path, labelled: bool = True) -> Path:
    write_pack(tmp_path / "p", random_images(5, 3, 3, 3), np.arange(5) % 2 if labelled else None, ["a", "b"])
    return tmp_path / "p"


def edit_header(folder: Path, **changes) -> None:
    header = json.loads((folder / "header.json").read_text())
    (folder / "header.json").write_text(json.dumps({**header, **changes}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "header.json").write_text('{"format": "genforge-pa'), r"header.json: corrupt header \("),
        (lambda f: edit_header(f, format="zarr"), r"not a genforge packed dataset \(format 'zarr'"),
        (lambda f: edit_header(f, version=2), "packed format version 2; this genforge reads version 1"),
        (lambda f: edit_header(f, count=-1), "corrupt header: 'count' is -1, expected a positive integer"),
        (lambda f: edit_header(f, channels=4), "'channels' is 4, expected 1 or 3"),
        (lambda f: edit_header(f, checksums=["x"]), "'checksums' must map file names to checksums"),
        (lambda f: (f / "header.json").unlink(), r"p: not a packed dataset \(no header.json\)"),
        (lambda f: (f / "images.u8").write_bytes(b"\0" * 100), r"images.u8: truncated: 100 bytes, the header says 135"),
        (lambda f: (f / "images.u8").write_bytes(b"\0" * 136), "images.u8: longer than its header says"),
        (lambda f: (f / "images.u8").unlink(), r"images.u8: missing \(5 images of 3x3x3\)"),
        (lambda f: (f / "labels.i64").unlink(), r"labels.i64: missing \(5 labels\)"),
        (lambda f: edit_header(f, class_names=["a"]), r"labels 0..1 do not fit the header's 1 class names"),
    ],
)
def test_broken_pack_is_one_clear_error(tmp_path, damage, message):
    folder = broken(tmp_path)
    damage(folder)
    with pytest.raises(GenforgeError, match=message) as error:
        PackedImages(folder)
    assert "\n" not in str(error.value)
    with pytest.raises(GenforgeError, match=message):
        load_dataset(str(folder))  # the same error through the front door


def flip_byte(path: Path, at: int) -> None:
    """Damage a file without changing its size."""
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_checksums_are_recorded_and_a_changed_image_byte_fails_a_full_pass(tmp_path, monkeypatch):
    folder = broken(tmp_path)
    sums = json.loads((folder / "header.json").read_text())["checksums"]
    assert set(sums) == {"images.u8", "labels.i64"} and all(v.startswith("blake2b:") for v in sums.values())
    assert PackedImages(folder).verify() is True
    monkeypatch.setattr(packed, "CHUNK_BYTES", 2 * 3 * 3 * 3)  # the checksum spans chunks
    flip_byte(folder / "images.u8", 100)
    handle = PackedImages(folder)  # opening reads no image: sizes still match
    assert handle.take([0]).shape == (1, 3, 3, 3)  # nor does a batch read
    with pytest.raises(GenforgeError, match="images.u8: its content does not match the checksum recorded when it"):
        handle.verify()
    with pytest.raises(GenforgeError, match="does not match the checksum"):
        list(handle.chunks())
    assert len(list(handle.chunks(stop=2))) == 1  # a partial pass checks nothing
    code, _, err = cli("data", "info", folder)
    assert code == 2 and "does not match the checksum" in one_error(err)


def test_a_changed_label_fails_on_opening(tmp_path):
    folder = broken(tmp_path)
    flip_byte(folder / "labels.i64", 0)  # label 0 -> 1: still in range, but not what was packed
    with pytest.raises(GenforgeError, match="labels.i64: its content does not match the checksum"):
        PackedImages(folder)


def test_packs_from_before_checksums_open_and_read(tmp_path):
    folder = broken(tmp_path)
    header = json.loads((folder / "header.json").read_text())
    header.pop("checksums")
    (folder / "header.json").write_text(json.dumps(header))
    handle = PackedImages(folder)
    assert handle.verify() is False and len(list(handle.chunks())) == 1
    code, out, err = cli("data", "info", folder, "--json")
    assert code == 0, err


# ---------------------------------------------------------------- pack_dataset from sources


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def image_folder(tmp_path: Path) -> Path:
    """Two classes; grey and colour mixed, so the set reads as RGB."""
    folder = tmp_path / "photos"
    for i, im in enumerate(random_images(3, 6, 6, 1)):
        save_image(folder / "cat" / f"{i}.png", im)
    for i, im in enumerate(random_images(2, 6, 6, 3)):
        save_image(folder / "dog" / f"{i}.png", im)
    return folder


@pytest.mark.parametrize(
    "options", [{}, {"resolution": 4, "fit": "resize"}, {"channels": 1}, {"resolution": 8, "fit": "pad", "channels": 3}]
)
def test_pack_image_folder_streams_and_equals_load(tmp_path, monkeypatch, options):
    folder = image_folder(tmp_path)
    expected = load_dataset(str(folder), **options)

    def whole_read(*args, **kwargs):
        raise AssertionError("an image folder must be streamed, not read whole")

    monkeypatch.setattr("genforge.data.pack.read_path", whole_read)
    steps = []
    summary = pack_dataset(
        folder, tmp_path / "p", chunk=2, progress=lambda done, total: steps.append((done, total)), **options
    )
    assert steps == [(2, 5), (4, 5), (5, 5)] and summary["count"] == 5
    data = PackedImages(tmp_path / "p")
    np.testing.assert_array_equal(data.take(range(5)), expected.images)
    np.testing.assert_array_equal(data.labels, expected.labels)
    assert data.class_names == ["cat", "dog"] and data.header["packed_with"]["split"] == "train"


def test_pack_zip_of_grey_images_streams(tmp_path):
    folder = tmp_path / "digits"
    images = random_images(5, 3, 3, 1)
    for i, im in enumerate(images):
        save_image(folder / ("odd" if i % 2 else "even") / f"{i}.png", im)
    archive = shutil.make_archive(str(tmp_path / "digits"), "zip", tmp_path, "digits")  # wrapping folder inside
    pack_dataset(archive, tmp_path / "p", chunk=2)
    data = load_dataset(str(tmp_path / "p"))
    assert data.channels == 1 and data.class_names == ["even", "odd"]  # all grey: stays one channel
    np.testing.assert_array_equal(data.images, images[[0, 2, 4, 1, 3]])
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1])


def test_pack_folder_of_mixed_sizes_without_fit_names_the_file(tmp_path):
    save_image(tmp_path / "src" / "a.png", random_images(1, 4, 4, 1)[0])
    save_image(tmp_path / "src" / "b.png", random_images(1, 4, 4, 1)[0])
    save_image(tmp_path / "src" / "c.png", random_images(1, 5, 4, 1)[0])
    with pytest.raises(GenforgeError, match=r"c.png: is 4x5 but the images before it are 4x4; pass a resolution"):
        pack_dataset(tmp_path / "src", tmp_path / "out", chunk=2)
    assert leftovers(tmp_path) == ["src"]  # nothing half-written beside it


def test_pack_failing_midway_leaves_nothing(tmp_path):
    folder = image_folder(tmp_path)
    (folder / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(GenforgeError, match="dog/1.png: not a readable image"):
        pack_dataset(folder, tmp_path / "p", chunk=2)
    assert leftovers(tmp_path) == ["photos"]


def test_pack_npz_idx_and_repack(tmp_path):
    images, labels = random_images(5, 4, 4, 3), np.array([0, 1, 1, 0, 2])
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    pack_dataset(tmp_path / "d.npz", tmp_path / "p", chunk=2)
    np.testing.assert_array_equal(PackedImages(tmp_path / "p").take(range(5)), images)
    # a packed set packs again (streamed), here to another size and to grey
    pack_dataset(tmp_path / "p", tmp_path / "q", resolution=2, fit="resize", channels=1, chunk=2)
    again = load_dataset(str(tmp_path / "q"))
    np.testing.assert_array_equal(
        again.images, load_dataset(str(tmp_path / "d.npz"), resolution=2, fit="resize", channels=1).images
    )
    np.testing.assert_array_equal(again.labels, labels)


def test_pack_named_dataset(tmp_path, monkeypatch):
    isolate_named(monkeypatch, tmp_path, tmp_path / "store")
    train_x, train_y, test_x, _ = write_mnist_folder(tmp_path / "store" / "fashion-mnist", gz=True)
    pack_dataset("fashion-mnist", tmp_path / "p", split="test")
    data = load_dataset(str(tmp_path / "p"))
    np.testing.assert_array_equal(data.images[..., 0], test_x)
    assert data.class_names[0] == "T-shirt/top" and "packed from fashion-mnist" in data.source
    with pytest.raises(GenforgeError, match=r"holds the one split it was packed from \('test'\)"):
        load_dataset(str(tmp_path / "p"), split="test")


# ---------------------------------------------------------------- load_dataset, open_dataset, describe


def test_limit_materializes_only_those(tmp_path, monkeypatch):
    images = random_images(50, 4, 4, 1)
    write_pack(tmp_path / "p", images, np.arange(50) % 5, list("abcde"))
    log = ReadLog(monkeypatch)
    data = load_dataset(str(tmp_path / "p"), limit=3)
    assert log.calls == [(0, 3)]
    np.testing.assert_array_equal(data.images, images[:3])
    np.testing.assert_array_equal(data.labels, [0, 1, 2])


def test_without_limit_loads_what_fits_and_refuses_the_rest(tmp_path, monkeypatch):
    images = random_images(50, 4, 4, 1)
    write_pack(tmp_path / "p", images)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "p"), split="all").images, images)
    monkeypatch.setattr("genforge.data.load.in_memory_limit", lambda: 100)
    with pytest.raises(GenforgeError, match="more than genforge reads into memory .*open_dataset, or pass a limit"):
        load_dataset(str(tmp_path / "p"))


def test_open_dataset_is_lazy(tmp_path, monkeypatch):
    images = random_images(10, 4, 4, 3)
    write_pack(tmp_path / "p", images)
    log = ReadLog(monkeypatch)
    data = open_dataset(str(tmp_path / "p"), resolution=4)
    assert isinstance(data, PackedImages) and log.calls == []
    np.testing.assert_array_equal(data.take([7, 2]), images[[7, 2]])
    in_memory = open_dataset(str(tmp_path / "p"), limit=2)  # a limit asks for arrays
    np.testing.assert_array_equal(in_memory.take([1]), images[[1]])  # ImageData answers take() too
    np.savez(tmp_path / "d.npz", images=images)
    assert isinstance(open_dataset(str(tmp_path / "d.npz")), gdata.ImageData)


def test_packed_data_is_not_resized_when_read(tmp_path):
    write_pack(tmp_path / "p", random_images(2, 4, 4, 3))
    with pytest.raises(
        GenforgeError, match="packed at 4x4, resolution 8 was asked; .*pack it again with --resolution 8"
    ):
        open_dataset(str(tmp_path / "p"), resolution=8, fit="pad")
    with pytest.raises(GenforgeError, match="packed with 3 channel.*pack it again with --channels 1"):
        load_dataset(str(tmp_path / "p"), channels=1)


def test_describe_streams_in_chunks(tmp_path, monkeypatch):
    images = random_images(10, 4, 4, 3)
    labels = np.array([0, 1, 1, 2, 2, 2, 0, 0, 0, 0])
    write_pack(tmp_path / "p", images, labels, ["x", "y", "z"])
    expected = describe(gdata.ImageData(images, labels, ["x", "y", "z"], source="memory"))
    monkeypatch.setattr(packed, "CHUNK_BYTES", 3 * 4 * 4 * 3)  # three images a read
    log = ReadLog(monkeypatch)
    info = describe(open_dataset(str(tmp_path / "p")))
    assert log.calls == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert {k: v for k, v in info.items() if k != "source"} == {k: v for k, v in expected.items() if k != "source"}
    assert info["class_counts"] == {"x": 5, "y": 2, "z": 3}


# ---------------------------------------------------------------- per-rank indices


def test_rank_shares_and_batches():
    shares = [rank_indices(10, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(10)) and [len(s) for s in shares] == [4, 3, 3]
    batch = draw_batch(1000, 16, seed=7, step=3, rank=1, world_size=4)
    np.testing.assert_array_equal(batch, draw_batch(1000, 16, seed=7, step=3, rank=1, world_size=4))  # pure
    assert (batch % 4 == 1).all() and batch.shape == (16,)
    assert not np.array_equal(batch, draw_batch(1000, 16, seed=7, step=4, rank=1, world_size=4))
    with pytest.raises(ValueError, match="rank 4 is outside 0..3"):
        rank_indices(10, 4, 4)
