"""Batches read ahead of the model: the same batches in the same order as reading on demand,
whatever the source; the mirror flips half the reals, deterministically; old configs unchanged;
a run from an image folder with the mirror on resumes bit-identically."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge import checkpoint as ckpt
from genforge import families
from genforge.config import from_dict, to_dict
from genforge.data import PackedImages, PackWriter
from genforge.errors import GenforgeError
from genforge.families.gan_config import GANRunConfig
from genforge.progress import SILENT, Reporter
from genforge.training import batches as batches_module
from genforge.training import runs
from genforge.training.batches import Batches, on_device

IMAGES = np.random.default_rng(0).integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)  # not mirror-symmetric


def expected(index: torch.Tensor, flips=None) -> torch.Tensor:
    x = torch.from_numpy(IMAGES)[index]
    if flips is not None:
        x = torch.where(torch.as_tensor(flips)[:, None, None, None], x.flip(2), x)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def packed(tmp_path: Path) -> PackedImages:
    with PackWriter(tmp_path / "p", 6, 5, 3) as writer:
        writer.append(IMAGES)
    return PackedImages(tmp_path / "p")


def test_read_ahead_gives_the_batches_of_reading_on_demand_in_any_order(tmp_path):
    on_demand = Batches(torch.from_numpy(IMAGES), None, 8, seed=4)
    sources = {"array": IMAGES, "packed": packed(tmp_path)}
    steps = [0, 1, 2, 3, 9, 10, 2, 3, 4, 5, 6, 7, 8, 30]  # in order, a jump back, a long run, a jump ahead
    for name, source in sources.items():
        with Batches(source, None, 8, seed=4, ahead=3) as ahead:
            for step in steps:
                x, _ = ahead.get(step)
                assert torch.equal(x, on_demand.get(step)[0]), (name, step)
            ahead.per_step = 2  # the precision probe changes it between calls
            assert torch.equal(ahead.get(3)[0], torch.cat([on_demand.get(6)[0], on_demand.get(7)[0]]))
        assert ahead._reader is None  # the thread is gone once the block ends
    # the first batch is exactly the first slice of the seeded permutation (nothing changed from before)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(4 * 1_000_003))
    assert torch.equal(on_demand.get(0)[0], expected(perm[:8]))


def test_an_error_while_reading_ahead_is_raised_by_get(tmp_path):
    data = packed(tmp_path)
    calls = []
    original = data.take

    def take(rows):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise GenforgeError("images.u8: ended early")
        return original(rows)

    data.take = take
    with Batches(data, None, 8, seed=0, ahead=2) as source:
        source.get(0)
        source.get(1)
        with pytest.raises(GenforgeError, match="ended early"):
            source.get(2)
        assert calls[0] == "genforge-batches"  # read by the background thread
        assert torch.equal(source.get(2)[0], Batches(torch.from_numpy(IMAGES), None, 8, seed=0).get(2)[0])


def test_mirror_flips_half_the_reals_deterministically_and_off_is_identity():
    plain = Batches(torch.from_numpy(IMAGES), None, 10, seed=1)
    mirrored = Batches(torch.from_numpy(IMAGES), None, 10, seed=1, mirror=True)
    again = Batches(IMAGES, None, 10, seed=1, mirror=True, ahead=2)  # read ahead, from host memory
    flipped = total = 0
    for step in range(200):
        x, m = plain.get(step)[0], mirrored.get(step)[0]
        assert torch.equal(x, expected(plain._choose(step, 1)[0]))  # off: the images as stored
        same = (m == x).flatten(1).all(1)
        mirror = (m == x.flip(3)).flatten(1).all(1)
        assert bool((same ^ mirror).all())  # each image is itself or its mirror image, never both
        assert torch.equal(mirror, torch.from_numpy(mirrored.flips(step)))
        assert torch.equal(again.get(step)[0], m)  # the same coins, whatever the source
        flipped, total = flipped + int(mirror.sum()), total + len(m)
    again.close()
    assert 0.45 < flipped / total < 0.55  # 2000 coins
    other = Batches(torch.from_numpy(IMAGES), None, 10, seed=2, mirror=True)
    assert not all(np.array_equal(other.flips(s), mirrored.flips(s)) for s in range(5))
    # under two processes, each rank's coins are its part of the global batch's
    ranks = [Batches(torch.from_numpy(IMAGES), None, 10, seed=1, mirror=True, rank=r, world_size=2) for r in (0, 1)]
    assert np.array_equal(np.concatenate([r.flips(7) for r in ranks]), mirrored.flips(7))


def test_data_smaller_than_a_batch_is_mirrored_image_by_image():
    for source in (torch.from_numpy(IMAGES), IMAGES):  # indexed where it lies, or read ahead
        x, _ = Batches(source, None, 64, seed=1, mirror=True).get(0)  # 50 images: one short batch
        plain, _ = Batches(source, None, 64, seed=1).get(0)
        mirrored = (x == plain.flip(3)).flatten(1).all(1)
        assert len(x) == len(IMAGES) and bool((mirrored | (x == plain).flatten(1).all(1)).all())
        assert 0 < int(mirrored.sum()) < len(IMAGES)


def test_code_grids_are_never_mirrored():
    codes = torch.arange(40 * 3 * 4).reshape(40, 3, 4)
    x, _ = Batches(codes, None, 8, seed=0, mirror=True).get(0)
    assert torch.equal(x, Batches(codes, None, 8, seed=0).get(0)[0])


def test_large_in_memory_data_stays_on_the_host(monkeypatch):
    device = torch.device("meta")  # stands for an accelerator: nothing is computed there
    small = on_device(IMAGES, device)
    assert isinstance(small, torch.Tensor) and small.device == device
    monkeypatch.setattr(batches_module, "DEVICE_BYTES", IMAGES.nbytes - 1)
    assert on_device(IMAGES, device) is IMAGES  # read batch by batch, ahead of the model
    cpu = on_device(IMAGES, torch.device("cpu"))  # on the CPU it is used where it lies
    assert isinstance(cpu, torch.Tensor) and cpu.data_ptr() == IMAGES.__array_interface__["data"][0]


def test_small_packed_data_is_read_whole_and_large_stays_on_disk(tmp_path, monkeypatch):
    data = packed(tmp_path)
    for device in (torch.device("cpu"), torch.device("meta")):
        whole = on_device(data, device)
        assert isinstance(whole, torch.Tensor) and whole.device == device and whole.shape == IMAGES.shape
    assert torch.equal(on_device(data, torch.device("cpu")), torch.from_numpy(IMAGES))
    monkeypatch.setattr(batches_module, "DEVICE_BYTES", IMAGES.nbytes - 1)
    assert on_device(data, torch.device("cpu")) is data  # read batch by batch, ahead of the model


@pytest.mark.parametrize("family", ["gan", "stylegan2", "fastgan", "vqvae"])
def test_stored_configs_without_the_mirror_key_trained_without_it(family):
    spec = families.get(family)
    old = to_dict(spec.config_class())
    del old["augment"]["mirror"]  # a run folder's config written before the key existed
    assert from_dict(spec.config_class, old).augment.mirror is None  # today: decided by the data
    migrated = from_dict(spec.config_class, spec.migrate(old))
    assert migrated.augment.mirror is False  # what that run trained with
    assert {**to_dict(migrated), "augment": None} == {**to_dict(spec.config_class()), "augment": None}
    kept = to_dict(spec.config_class())
    kept["augment"]["mirror"] = True
    assert from_dict(spec.config_class, spec.migrate(kept)).augment.mirror is True
    with pytest.raises(GenforgeError, match="augment.mirror"):
        from_dict(GANRunConfig, {"augment": {"mirror": "yes"}})


def test_a_run_from_an_image_folder_with_the_mirror_resumes_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "faces"
    for i, image in enumerate(np.random.default_rng(1).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)):
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    gan = families.get("gan")
    sets = [
        "model.z_dim=8",
        "model.g_width=8",
        "model.d_width=8",
        "train.batch_size=8",
        "train.device=cpu",
        "train.precision=fp32",
        "train.grid_images=4",
        "train.log_every=2",
        "train.steps=6",
        "train.checkpoint_every=3",
        "augment.mirror=true",
    ]

    def config():
        return gan.resolve("default", None, sets, {"data": {"source": str(folder)}})

    runs.train(gan, config(), tmp_path / "whole")
    first = runs.train(gan, config(), tmp_path / "parts", stop_after=3)
    assert first.interrupted and first.step == 3
    runs.train(gan, config(), tmp_path / "parts")
    a, b = ckpt.load(tmp_path / "whole"), ckpt.load(tmp_path / "parts")
    assert a.step == b.step == 6 and set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.config["augment"]["mirror"] is True and len(list((tmp_path / "cache" / "folders").iterdir())) == 1


def test_a_run_saved_before_the_mirror_default_resumes_from_an_unlabelled_folder_as_it_trained(
    tmp_path, monkeypatch, capsys
):
    """Left null, augment.mirror is on for this folder; the run being resumed trained without it
    (its stored config has no key), so it resumes without flips, says so, and is not refused."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(np.random.default_rng(2).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    gan = families.get("gan")
    sets = ["model.z_dim=8", "model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.device=cpu"]
    sets += ["train.precision=fp32", "train.channels_last=false", "train.grid_images=4", "train.checkpoint_every=2"]

    def config(steps):
        return gan.resolve("default", None, [*sets, f"train.steps={steps}"], {"data": {"source": str(folder)}})

    run = tmp_path / "run"
    runs.train(gan, config(2), run)
    assert ckpt.load(run).config["augment"]["mirror"] is True  # today's default for this folder
    meta_path = ckpt.find(run) / ckpt.META
    meta = json.loads(meta_path.read_text())
    meta["config"]["augment"].pop("mirror")  # as a run saved before the key existed
    meta_path.write_text(json.dumps(meta))
    (run / "config.yaml").unlink()

    capsys.readouterr()
    result = runs.train(gan, config(4), run, reporter=Reporter())
    err = capsys.readouterr().err
    assert result.step == 4 and not result.interrupted
    assert ckpt.load(run).config["augment"]["mirror"] is False  # resumed as it trained
    assert "augment.mirror: False as the run trained" in err and "augment.mirror: on" not in err
    # asked for explicitly, the difference is still refused with one line naming the key
    with pytest.raises(GenforgeError, match="augment.mirror=False, this command asks for True"):
        runs.train(
            gan,
            gan.resolve(
                "default", None, [*sets, "train.steps=6", "augment.mirror=true"], {"data": {"source": str(folder)}}
            ),
            run,
        )


@pytest.mark.parametrize("family", ["gan", "stylegan2", "fastgan", "vqvae"])
def test_augment_mirror_reaches_the_batches_of_every_image_family(tmp_path, family):
    """Set, it is what it says; left unset, it is on for data without labels and off for labelled
    data, and training says so when it turns it on."""
    side = 32 if family == "fastgan" else 4  # FastGAN's smallest side
    images = np.resize(IMAGES, (len(IMAGES), side, side, 3))
    np.savez(tmp_path / "plain.npz", images=images)
    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(len(images)) % 2)
    spec = families.get(family)
    for source, sets, mirror in (
        ("plain", [], True),
        ("labelled", [], False),
        ("plain", ["augment.mirror=false"], False),
        ("labelled", ["augment.mirror=true"], True),
    ):
        config = spec.resolve("default", None, sets, {"data": {"source": str(tmp_path / f"{source}.npz")}})
        prepared = spec.prepare(config, SILENT)
        assert prepared.mirror is mirror and prepared.config.augment.mirror is mirror
        assert any(note.startswith("augment.mirror: on") for note in prepared.notes) is (mirror and not sets)
