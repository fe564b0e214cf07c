"""The command line: bad input is one clear line, a non-zero exit and nothing overwritten; the
happy path trains a tiny GAN and samples it in every format."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge import checkpoint as ckpt
from genforge.cli import main
from genforge.config import from_dict
from genforge.models.vqvae import VQVAE, VQVAEConfig

TINY = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "train.grid_images=4", "train.log_every=2"]
TINY_FLAGS = [x for s in TINY for x in ("--set", s)] + ["--batch-size", "8", "--device", "cpu"]
RNG = np.random.default_rng(0)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("genforge: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_npz(path: Path, n: int = 24, size: int = 32, labels=None) -> Path:
    arrays = {"images": RNG.integers(0, 256, (n, size, size, 1), dtype=np.uint8)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    np.savez(path, **arrays)
    return path


def write_png(path: Path, size=(32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(path)


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---------------------------------------------------------------------------------------------
# bad data and config for `genforge train gan`: one line, non-zero, nothing written
# ---------------------------------------------------------------------------------------------


def missing_path(tmp: Path):
    return tmp / "no-such-data", [], "no such file or folder"


def empty_folder(tmp: Path):
    (tmp / "empty").mkdir()
    return tmp / "empty", [], "no images found"


def corrupt_png(tmp: Path):
    folder = tmp / "pngs"
    for i in range(3):
        write_png(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return folder, [], "broken.png: not a readable image"


def truncated_idx(tmp: Path):
    path = tmp / "train-images-idx3-ubyte.gz"
    header = struct.pack(">I", 0x0803) + struct.pack(">3I", 10, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(28 * 28 * 3)))
    return path, [], "truncated IDX file"


def mixed_sizes(tmp: Path):
    folder = tmp / "mixed"
    write_png(folder / "a.png", (32, 32))
    write_png(folder / "b.png", (28, 28))
    return folder, ["--set", "data.fit=none"], "images differ in size"


def label_mismatch(tmp: Path):
    return write_npz(tmp / "labelled.npz", n=12, labels=[0] * 11), [], "holds 11 labels but 'images' holds 12 images"


def unknown_key(tmp: Path):
    return write_npz(tmp / "d.npz"), ["--set", "train.bach_size=8"], "unknown config key 'train.bach_size'"


def negative_batch(tmp: Path):
    return write_npz(tmp / "d.npz"), ["--batch-size", "-4"], "argument --batch-size: must be >= 1, got -4"


def bad_resolution(tmp: Path):
    return (
        write_npz(tmp / "d.npz"),
        ["--set", "data.resolution=30", "--set", "data.fit=resize"],
        "DCGAN resolution 30 is not supported",
    )


def bad_yaml(tmp: Path):
    (tmp / "c.yaml").write_text("train: [\n")
    return write_npz(tmp / "d.npz"), ["--config", str(tmp / "c.yaml")], "not valid YAML"


BAD_INPUTS = [
    missing_path,
    empty_folder,
    corrupt_png,
    truncated_idx,
    mixed_sizes,
    label_mismatch,
    unknown_key,
    negative_batch,
    bad_resolution,
    bad_yaml,
]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=[f.__name__ for f in BAD_INPUTS])
def test_bad_train_input_is_one_line_and_writes_nothing(tmp_path, capsys, make):
    source, flags, fragment = make(tmp_path)
    # an existing run folder with a sentinel and a finished run's files must stay as they were
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "sentinel.txt").write_text("keep me")
    (existing / "config.yaml").write_text("old: config\n")
    before = snapshot(existing)
    for out in (existing, tmp_path / "fresh"):
        code, _, err = cli(capsys, "train", "gan", "--data", source, "--out", out, "--steps", "2", *TINY_FLAGS, *flags)
        assert_one_line_error(code, err, fragment)
    assert snapshot(existing) == before
    assert not (tmp_path / "fresh").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz")
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    try:
        code, _, err = cli(capsys, "train", "gan", "--data", data, "--out", out, "--steps", "1", *TINY_FLAGS)
    finally:
        assert out.read_text() == "keep me"
    assert_one_line_error(code, err, str(out))


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------


def test_training_into_a_run_of_another_kind_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    ckpt.save(out, 5, "prior", {"kind": "ar"}, {"w": torch.zeros(1)}, {})
    before = snapshot(out)
    code, _, err = cli(
        capsys, "train", "gan", "--data", write_npz(tmp_path / "d.npz"), "--out", out, "--steps", "2", *TINY_FLAGS
    )
    assert_one_line_error(code, err, "this is a 'prior' checkpoint, expected 'gan'")
    assert snapshot(out) == before


def test_sampling_a_vqvae_run_is_refused(tmp_path, capsys):
    run = tmp_path / "vq"
    model = {"channels": 1, "resolution": 8, "width": 4, "latent_dim": 4, "quantizer": {"num_codes": 8}}
    vqvae = VQVAE(from_dict(VQVAEConfig, model))  # a loadable VQ-VAE: what it can do is asked of the model
    ckpt.save(run, 5, "vqvae", {"model": model}, ckpt.pack_module("model.vqvae", vqvae), {})
    code, _, err = cli(capsys, "sample", run, "--n", 4, "--out", tmp_path / "g.png", "--device", "cpu")
    assert_one_line_error(code, err, "a VQ-VAE alone reconstructs but does not generate")
    assert not (tmp_path / "g.png").exists()


def test_sampling_an_unknown_kind_is_refused(tmp_path, capsys):
    run = tmp_path / "other"
    ckpt.save(run, 5, "classifier", {}, {"w": torch.zeros(1)}, {})
    code, _, err = cli(capsys, "sample", run, "--n", 4, "--out", tmp_path / "g.png", "--device", "cpu")
    assert_one_line_error(code, err, "this is a 'classifier' checkpoint")


def test_sampling_a_pickle_payload_is_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "executed"
    run = tmp_path / "run"
    folder = ckpt.save(run, 5, "gan", {}, {"w": torch.zeros(1)}, {})
    torch.save({"G": Payload(marker)}, folder / "tensors.safetensors")
    out = tmp_path / "g.png"
    code, _, err = cli(capsys, "sample", run, "--n", 4, "--out", out, "--device", "cpu")
    assert_one_line_error(code, err, "tensors.safetensors: is a pickle (torch.save) file")
    assert not marker.exists() and not out.exists()
    # the same file handed over directly
    code, _, err = cli(capsys, "sample", folder / "tensors.safetensors", "--n", 4, "--out", out, "--device", "cpu")
    assert_one_line_error(code, err, "is a pickle")
    assert not marker.exists()


def test_sampling_a_missing_run_or_empty_run(tmp_path, capsys):
    code, _, err = cli(capsys, "sample", tmp_path / "nothing", "--n", 4, "--out", tmp_path / "g.png")
    assert_one_line_error(code, err, "no such run or checkpoint")
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "sample", tmp_path / "empty", "--n", 4, "--out", tmp_path / "g.png")
    assert_one_line_error(code, err, "holds no checkpoint yet")


# ---------------------------------------------------------------------------------------------
# happy path: train a tiny GAN once, sample it every way
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-run")
    data = write_npz(root / "d.npz", n=24)
    out = root / "run"
    code = main(["train", "gan", "--data", str(data), "--out", str(out), "--steps", "4", "--quiet", *TINY_FLAGS])
    assert code == 0
    return out


def test_train_writes_a_run(run, capsys):
    assert ckpt.load(run).step == 4
    assert (run / "config.yaml").is_file() and (run / "samples" / "final.png").is_file()


def test_train_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, _ = cli(
        capsys,
        "train",
        "gan",
        "--data",
        write_npz(tmp_path / "d.npz"),
        "--out",
        out,
        "--steps",
        "2",
        "--quiet",
        *TINY_FLAGS,
    )
    assert code == 0
    assert stdout.strip() == f"{out}: step 2, " + stdout.split(", ", 1)[1].strip()
    assert "samples in" in stdout


def test_sample_grid_png(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, err = cli(capsys, "sample", run, "--n", 16, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert f"wrote 16 samples to {out}" in stdout
    with Image.open(out) as image:
        # 4 x 4 images of 32 px with 2 px padding, written at twice the size
        assert image.size == ((4 * 34 + 2) * 2, (4 * 34 + 2) * 2)
        assert image.mode == "L"


def test_sample_npz_and_png_dir(run, tmp_path, capsys):
    code, _, err = cli(
        capsys, "sample", run, "--n", 16, "--out", tmp_path / "s.npz", "--format", "npz", "--device", "cpu"
    )
    assert code == 0, err
    with np.load(tmp_path / "s.npz") as f:
        images = f["images"]
    assert images.shape == (16, 32, 32, 1) and images.dtype == np.uint8
    assert images.std() > 0

    code, _, err = cli(
        capsys, "sample", run, "--n", 5, "--out", tmp_path / "dir", "--format", "png-dir", "--device", "cpu"
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "dir").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    with Image.open(tmp_path / "dir" / "000000.png") as image:
        assert image.size == (32, 32)
        assert np.array_equal(np.asarray(image), images[0, :, :, 0])  # same seed, same first sample


def test_sample_interpolate(run, tmp_path, capsys):
    out = tmp_path / "walk.png"
    code, stdout, err = cli(capsys, "sample", run, "--n", 3, "--interpolate", 5, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert "wrote 15 samples" in stdout
    with Image.open(out) as image:
        assert image.size == ((5 * 34 + 2) * 2, (3 * 34 + 2) * 2)  # n rows of 5
    code, _, err = cli(capsys, "sample", run, "--n", 3, "--interpolate", 1, "--out", out, "--device", "cpu")
    assert_one_line_error(code, err, "argument --interpolate: must be >= 2, got 1")


def sample_npz(capsys, run, path: Path, *flags) -> np.ndarray:
    code, _, err = cli(capsys, "sample", run, "--n", 16, "--out", path, "--format", "npz", "--device", "cpu", *flags)
    assert code == 0, err
    with np.load(path) as f:
        return f["images"]


def test_sample_seed_and_truncation(run, tmp_path, capsys):
    first = sample_npz(capsys, run, tmp_path / "a.npz", "--seed", 3, "--truncation", 0.5)
    again = sample_npz(capsys, run, tmp_path / "b.npz", "--seed", 3, "--truncation", 0.5)
    plain = sample_npz(capsys, run, tmp_path / "c.npz", "--seed", 3)
    other = sample_npz(capsys, run, tmp_path / "d.npz", "--seed", 4, "--truncation", 0.5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, plain)
    assert not np.array_equal(first, other)


def test_sample_bad_options(run, tmp_path, capsys):
    out = tmp_path / "g.png"
    for flags, fragment in (
        (["--n", "0"], "argument --n: must be >= 1, got 0"),
        (["--n", "4", "--nrow", "-2"], "argument --nrow: must be >= 1, got -2"),
        (["--seed", str(2**64)], "argument --seed: must be in 0 .. 2**63 - 1"),
        (["--truncation", "-1"], "truncation must be a positive number"),
        (["--truncation", "nan"], "argument --truncation: must be a finite number"),
        (
            ["--temperature", "0.5"],
            "--temperature does not apply to a gan run (its sampling flags: --truncation, --interpolate)",
        ),
    ):
        code, _, err = cli(capsys, "sample", run, "--out", out, "--device", "cpu", *flags)
        assert_one_line_error(code, err, fragment)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# data info, --help
# ---------------------------------------------------------------------------------------------


def test_data_info(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz", n=12, labels=[0, 1, 2] * 4)
    code, stdout, err = cli(capsys, "data", "info", data)
    assert code == 0, err
    facts = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in stdout.splitlines()}
    assert facts["count"] == "12"
    assert (facts["height"], facts["width"], facts["channels"]) == ("32", "32", "1")
    assert facts["num_classes"] == "3"
    code, stdout, _ = cli(capsys, "data", "info", data, "--json", "--resolution", 64, "--fit", "pad")
    facts = json.loads(stdout)
    assert facts["count"] == 12 and facts["height"] == 64 and facts["class_counts"] == {"0": 4, "1": 4, "2": 4}


def test_data_info_bad_input(tmp_path, capsys):
    code, _, err = cli(capsys, "data", "info", tmp_path / "missing")
    assert_one_line_error(code, err, "no such file or folder")
    code, _, err = cli(capsys, "data", "info", write_npz(tmp_path / "d.npz"), "--fit", "pad")
    assert_one_line_error(code, err, "--fit needs --resolution")


def test_data_info_fashion_mnist_grid(fashion_available, tmp_path, capsys):
    grid = tmp_path / "fashion.png"
    code, stdout, err = cli(capsys, "data", "info", "fashion-mnist", "--grid", grid)
    assert code == 0, err
    assert "count: 60000" in stdout and "num_classes: 10" in stdout
    with Image.open(grid) as image:
        assert image.size == ((8 * 30 + 2) * 2, (8 * 30 + 2) * 2)  # 64 examples of 28 px


def test_python_m_genforge_help():
    result = subprocess.run([sys.executable, "-m", "genforge", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: genforge")
    for command in ("train", "sample", "data"):
        assert command in result.stdout
