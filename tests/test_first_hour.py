"""A new user's first hour: the budget is said, --data is asked for, --resolution and WebP/TIFF
folders work, each CLI word means one thing (the families declare their sampling flags), every
option has help, and genforge imports where fcntl does not exist."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from genforge import cli as cli_module
from genforge import families, runfolder
from genforge.commands import demo
from genforge.commands.demo import default_out
from genforge.data import load_dataset
from genforge.errors import GenforgeError
from genforge.families import registry
from genforge.training import loop
from synthetic import COMMON, TINY_GAN, TINY_VQVAE, cli, one_error, respec, sets, write_idx_folder, write_npz

DATA_FAMILIES = ("gan", "stylegan2", "vqvae")


# ---------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------


def test_train_without_a_budget_says_the_default_first_and_ends_by_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "DEFAULT_MINUTES", 0.002)  # 0.12 s: the default's line, cheaply
    data, out = write_npz(tmp_path / "d.npz", n=32), tmp_path / "run"
    flags = ["--device", "cpu", "--precision", "fp32", "--set", "train.channels_last=false"]
    code, _, err = cli("train", "gan", "--data", data, "--out", out, *flags, *sets(COMMON, TINY_GAN))
    assert code == 0, err
    first = err.splitlines()[:3]
    assert "budget: 0.002 min (default; --minutes/--steps to change)" in first, err
    assert (out / "checkpoints" / "latest").is_file()  # stopped by the budget, checkpointed at the end


def dry_run(tmp_path: Path, *flags) -> tuple[dict, str]:
    """The printed config, and the last line printed."""
    code, out, err = cli("train", "gan", "--out", tmp_path / "never-written", "--dry-run", *flags)
    assert code == 0, err
    assert not (tmp_path / "never-written").exists()
    return yaml.safe_load(out), out.splitlines()[-1]


def test_dry_run_ends_with_the_budget(tmp_path):
    data = write_npz(tmp_path / "d.npz")
    config, last = dry_run(tmp_path, "--data", data)
    assert (config["train"]["steps"], config["train"]["minutes"]) == (0, 0.0)
    assert last == "# budget: 30 min (default; --minutes/--steps to change)"
    assert dry_run(tmp_path, "--data", data, "--steps", 5)[1] == "# budget: 5 steps"
    assert dry_run(tmp_path, "--data", data, "--minutes", 2.5)[1] == "# budget: 2.5 min"
    assert (
        dry_run(tmp_path, "--data", data, "--steps", 5, "--minutes", 2)[1]
        == "# budget: 5 steps or 2 min, whichever comes first"
    )


# ---------------------------------------------------------------------------------------------
# --data, --resolution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", DATA_FAMILIES)
def test_train_needs_data(tmp_path, family):
    out = tmp_path / "run"
    code, _, err = cli("train", family, "--out", out, "--steps", 1)
    assert code == 2 and f"train {family} needs --data" in one_error(err)
    assert not out.exists()


def test_data_may_come_from_the_config_file_or_a_set(tmp_path):
    data = write_npz(tmp_path / "d.npz")
    (tmp_path / "c.yaml").write_text(f"data:\n  source: {data}\n")
    assert dry_run(tmp_path, "--config", tmp_path / "c.yaml")[0]["data"]["source"] == str(data)
    assert dry_run(tmp_path, "--set", f"data.source={data}")[0]["data"]["source"] == str(data)
    assert dry_run(tmp_path, "--set", f"data={{source: {data}}}")[0]["data"]["source"] == str(data)


@pytest.mark.parametrize("family", DATA_FAMILIES)
def test_resolution_sets_data_resolution(tmp_path, family):
    data = write_npz(tmp_path / "d.npz", size=32)
    code, out, err = cli("train", family, "--data", data, "--out", tmp_path / "r", "--dry-run", "--resolution", 64)
    assert code == 0, err
    config = yaml.safe_load(out)
    assert (config["data"]["resolution"], config["model"]["resolution"]) == (64, 64)
    assert config["data"]["fit"] == "resize"  # square images are resized (fit auto)


def test_training_says_how_it_fitted_the_asked_resolution(tmp_path):
    data = write_npz(tmp_path / "d.npz", size=28)
    flags = ["--steps", 1, "--device", "cpu", "--precision", "fp32", *sets(COMMON, TINY_GAN)]
    code, _, err = cli("train", "gan", "--data", data, "--out", tmp_path / "r", "--resolution", 32, *flags)
    assert code == 0, err
    assert "data: 28x28 -> 32x32 (resize), as asked" in err.splitlines()


def test_a_prior_has_no_data_flags(tmp_path):
    prior = subparser(cli_module.build_parser(), "train", "prior")
    assert not {"--data", "--resolution"} & set(prior._option_string_actions)
    code, _, err = cli("train", "prior", "--vqvae", tmp_path, "--out", tmp_path / "p", "--resolution", 32)
    assert code == 2 and "unrecognized arguments: --resolution 32" in one_error(err)


# ---------------------------------------------------------------------------------------------
# every option has help; sampling flags are the families'
# ---------------------------------------------------------------------------------------------


def subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("genforge",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))
        else:
            yield path, action


def test_every_option_has_help():
    seen = list(walk(cli_module.build_parser()))
    assert len(seen) > 100  # every command was walked
    silent = [f"{' '.join(path)} {action.option_strings or action.dest}" for path, action in seen if not action.help]
    assert not silent, silent


def test_sample_flags_name_the_families_they_apply_to():
    sample = subparser(cli_module.build_parser(), "sample")
    helps = {flag: sample._option_string_actions[flag].help for flag in ("--truncation", "--interpolate", "--top-p")}
    assert (
        helps["--truncation"].startswith("gan: redraw latent entries") and "; stylegan2: psi" in helps["--truncation"]
    )
    assert helps["--interpolate"].startswith("gan, stylegan2: ")
    assert helps["--top-p"].startswith("prior: ")
    declared = {f.flag for name in families.names() for f in families.get(name).sample_flags}
    assert declared <= set(sample._option_string_actions)


def test_a_new_familys_sample_flag_joins_the_parser(monkeypatch):
    flag = registry.SampleFlag("--wiggle", "wiggle", "how far each latent wiggles")
    fake = respec(families.get("gan"), name="fake", sample_flags=(flag,))
    monkeypatch.setitem(registry.FAMILIES, "fake", fake)
    sample = subparser(cli_module.build_parser(), "sample")
    assert sample._option_string_actions["--wiggle"].help == "fake: how far each latent wiggles"
    clash = respec(fake, name="clash", sample_flags=(dataclasses.replace(flag, key="wobble"),))
    monkeypatch.setitem(registry.FAMILIES, "clash", clash)
    with pytest.raises(GenforgeError, match="families fake and clash declare --wiggle differently"):
        cli_module.build_parser()


# ---------------------------------------------------------------------------------------------
# reconstruct --n 0, demo --out
# ---------------------------------------------------------------------------------------------


def test_reconstruct_n_0_is_the_whole_split(tmp_path):
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=40)
    vq = tmp_path / "vq"
    code, _, err = cli("train", "vqvae", "--data", data, "--out", vq, "--steps", 1, "--device", "cpu", "--quiet",
                       *sets(COMMON, TINY_VQVAE))  # fmt: skip
    assert code == 0, err
    heights = {}
    for n in (0, 32):
        out = tmp_path / f"r{n}.png"
        code, _, err = cli("reconstruct", vq, "--n", n, "--out", out, "--device", "cpu")
        assert code == 0, err
        heights[n] = Image.open(out).size[1]
    # 16 images a row: 2 x 40 test images are 5 rows, 2 x 32 are 4; rows are (side + 2) px, grid x2
    side = (heights[32] // 2 - 2) // 4 - 2
    assert heights[0] == (5 * (side + 2) + 2) * 2


def test_demo_writes_into_a_folder_per_dataset(monkeypatch, capsys):
    assert default_out("fashion-mnist") == Path("runs/demo")
    assert default_out("emoji") == Path("runs/demo-emoji")
    assert default_out("/data/my photos/") == Path("runs/demo-my-photos")
    asked = []
    monkeypatch.setattr(demo, "run_demo", lambda out, *a, **k: asked.append(out) or SimpleNamespace(report="r"))
    assert cli_module.main(["demo", "--data", "emoji"]) == 0
    assert cli_module.main(["demo"]) == 0
    assert cli_module.main(["demo", "--data", "emoji", "--out", "elsewhere"]) == 0
    assert asked == [Path("runs/demo-emoji"), Path("runs/demo"), Path("elsewhere")]


# ---------------------------------------------------------------------------------------------
# WebP and TIFF
# ---------------------------------------------------------------------------------------------


def write_formats(folder: Path) -> tuple[np.ndarray, list[Path]]:
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    paths = [folder / "a" / "0.webp", folder / "a" / "1.WEBP", folder / "b" / "2.tif", folder / "b" / "3.tiff"]
    for picture, path in zip(pictures, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"lossless": True} if path.suffix.lower() == ".webp" else {}
        Image.fromarray(picture).save(path, format="WEBP" if path.suffix.lower() == ".webp" else "TIFF", **options)
    return pictures, paths


def test_webp_and_tiff_read_in_folders_and_zips(tmp_path):
    pictures, paths = write_formats(tmp_path / "photos")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for path in paths:
            archive.write(path, path.relative_to(tmp_path).as_posix())
    for source in (tmp_path / "photos", tmp_path / "photos.zip"):
        data = load_dataset(str(source))
        assert np.array_equal(data.images, pictures), source
        assert data.labels.tolist() == [0, 0, 1, 1]


def test_a_grey_tiff_stays_grey(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    (tmp_path / "g").mkdir()
    Image.fromarray(grey).save(tmp_path / "g" / "a.tif")
    Image.fromarray(grey[::-1]).save(tmp_path / "g" / "b.tif")
    data = load_dataset(str(tmp_path / "g"))
    assert data.images.shape == (2, 8, 8, 1) and np.array_equal(data.images[0, :, :, 0], grey)


# ---------------------------------------------------------------------------------------------
# no fcntl (Windows)
# ---------------------------------------------------------------------------------------------

NO_FCNTL = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    class NoFcntl:
        def find_spec(self, name, path=None, target=None):
            if name == "fcntl":
                raise ImportError("no fcntl here")
            return None

    sys.modules.pop("fcntl", None)
    sys.meta_path.insert(0, NoFcntl())
    from genforge import cli
    from genforge.errors import GenforgeError
    from genforge.runfolder import RunLock

    assert "fcntl" not in sys.modules
    try:
        cli.main(["train", "gan", "--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
    folder = Path(sys.argv[1])
    try:
        with RunLock(folder):
            raise AssertionError("locked without fcntl or msvcrt")
    except GenforgeError as e:
        print("lock:", e)
    assert not folder.exists()
    cli.main(["--help"])
    """
)


class FakeMsvcrt:
    """msvcrt.locking's contract: LK_NBLCK on a region another handle holds fails with EACCES."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self):
        self.held: dict[int, int] = {}  # inode of the locked file -> fd holding its first byte
        self.calls: list[tuple[int, int]] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1 and os.lseek(fd, 0, os.SEEK_CUR) == 0  # the first byte
        self.calls.append((mode, nbytes))
        inode = os.fstat(fd).st_ino
        if mode == self.LK_NBLCK:
            if inode in self.held:
                raise OSError(errno.EACCES, "Permission denied")
            self.held[inode] = fd
        else:
            assert self.held.pop(inode) == fd


def test_the_lock_uses_msvcrt_where_there_is_no_fcntl(tmp_path, monkeypatch):
    fake = FakeMsvcrt()
    monkeypatch.setattr(runfolder, "fcntl", None)
    monkeypatch.setattr(runfolder, "msvcrt", fake)
    with runfolder.RunLock(tmp_path / "run"):
        with pytest.raises(GenforgeError, match="another genforge process is training into this folder"):
            with runfolder.RunLock(tmp_path / "run"):
                pass
    with runfolder.RunLock(tmp_path / "run"):  # released: taken again
        pass
    lock, unlock = fake.LK_NBLCK, fake.LK_UNLCK
    assert [mode for mode, _ in fake.calls] == [lock, lock, unlock, lock, unlock]  # the refused one holds nothing
    assert not fake.held


def test_genforge_imports_and_helps_without_fcntl(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_FCNTL, str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: genforge train gan" in result.stdout and "usage: genforge [-h]" in result.stdout
    assert "lock: this platform has neither fcntl nor msvcrt" in result.stdout
