"""The Reporter: library calls are silent unless given one; the commands make one from --quiet.

Also an AST guard over the package: outside the command line (cli.py, commands/) and
progress.py itself, nothing prints or writes to a standard stream, and no function takes a
``progress`` on/off flag (a reporter is passed instead).
"""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genforge
from genforge import families
from genforge.config import resolve
from genforge.data import load_dataset
from genforge.families.gan import GAN_PRESETS, GANRunConfig
from genforge.progress import SILENT, Progress, Reporter
from genforge.training import runs

PACKAGE = Path(genforge.__file__).parent
# Where writing to the user's streams is the job: the command line and the reporter itself.
FRONT = ("cli.py", "commands/", "progress.py")
# path (relative to the package) -> why it may still print or touch a standard stream. Empty:
# every library module speaks through a Reporter.
ALLOWED: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# The object


def test_a_reporter_says_lines_and_counts_work_on_its_file():
    out = io.StringIO()
    reporter = Reporter(file=out)
    reporter.say("data: cached in somewhere")
    with reporter.progress(total=4, desc="decoding", unit="image", interval=1e9) as bar:
        assert isinstance(bar, Progress) and bar.enabled and bar.file is out
        bar.update(4)
    assert list(reporter.track(range(3), "sampling")) == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert lines[0] == "data: cached in somewhere"
    assert lines[1].startswith("decoding | image 4/4 (100%)") and lines[1].endswith("elapsed")
    assert lines[2].startswith("sampling | it 3/3 (100%)") and len(lines) == 3


def test_silent_prints_nothing_and_still_yields_and_counts(capsys):
    SILENT.say("not shown")
    with SILENT.progress(total=2) as bar:
        bar.update(2)
        bar.write("not shown either")
    assert bar.n == 2 and not bar.enabled
    assert list(SILENT.track([5, 6])) == [5, 6]
    assert capsys.readouterr() == ("", "")
    assert SILENT.when(True) is SILENT and Reporter().when(False) is SILENT


def test_without_a_file_it_writes_to_the_stderr_of_the_moment(capsys):
    reporter = Reporter()  # made before pytest swaps the stream in: still reaches it
    reporter.say("hello")
    assert capsys.readouterr() == ("", "hello\n")
    assert reporter.when(True) is reporter


# ---------------------------------------------------------------------------------------------
# Library calls: silent by default, their lines with a reporter


def _photo_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(5):
        path = root / "photos" / ("cat" if i % 2 else "dog") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(path)
    return root / "photos"


def test_loading_a_folder_says_its_cache_only_when_given_a_reporter(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    folder = _photo_folder(tmp_path)
    assert len(load_dataset(str(folder), resolution=4, fit="resize")) == 5  # built silently
    assert capsys.readouterr() == ("", "")
    assert len(load_dataset(str(folder), resolution=3, fit="resize", reporter=Reporter())) == 5  # another cache
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"decoding {folder} once (cache) | image 5/5 (100%)")
    assert err[1].startswith("data: cached in ") and len(err) == 2


def _config(data: Path) -> GANRunConfig:
    sets = ["model.z_dim=8", "model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.device=cpu"]
    sets += ["train.grid_images=4", "train.steps=2", "train.precision=fp32", "train.channels_last=false"]
    return resolve(GANRunConfig, GAN_PRESETS, "default", None, sets, {"data": {"source": str(data)}})


def test_a_training_run_is_silent_unless_given_a_reporter(tmp_path, capsys):
    data = tmp_path / "data.npz"  # 30x30: fitted to 32x32, which the run says in a note
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (24, 30, 30, 1), dtype=np.uint8))
    gan = families.get("gan")
    assert runs.train(gan, _config(data), tmp_path / "quiet", reporter=SILENT).step == 2
    assert runs.train(gan, _config(data), tmp_path / "default").step == 2  # SILENT is the default
    assert capsys.readouterr() == ("", "")

    assert runs.train(gan, _config(data), tmp_path / "told", reporter=Reporter()).step == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert lines[0] == "data: 30x30 -> 32x32 (resize), the nearest size the model supports"
    start = next(i for i, line in enumerate(lines) if line.startswith("training gan on cpu, precision fp32 (set)"))
    assert lines[start].endswith(f"-> {tmp_path / 'told'}") and lines[start + 1] == "budget: 2 steps"
    assert lines[-1].startswith("step 2/2 (100%)") and lines[-1].endswith("elapsed")


# ---------------------------------------------------------------------------------------------
# The guard


def stream_use(tree: ast.AST) -> list[str]:
    """Lines where code prints, warns as output, or names sys.stdout / sys.stderr."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append((node.lineno, "print("))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn":
            found.append((node.lineno, "warnings.warn("))
        elif isinstance(node, ast.Attribute) and ast.unparse(node) in ("sys.stderr", "sys.stdout"):
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {what}" for line, what in sorted(found)]


def progress_flags(tree: ast.AST) -> list[str]:
    """Parameters named ``progress`` that are on/off flags: typed bool or defaulting to True/False."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        a = node.args
        positional = a.posonlyargs + a.args
        defaults = dict(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        defaults.update((arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None)
        for arg in positional + a.kwonlyargs:
            if arg.arg != "progress":
                continue
            typed = arg.annotation is not None and ast.unparse(arg.annotation) in ("bool", "'bool'")
            default = defaults.get(arg)
            flag = isinstance(default, ast.Constant) and isinstance(default.value, bool)
            if typed or flag:
                found.append(f"{arg.lineno}: {getattr(node, 'name', 'lambda')}(progress)")
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def test_library_modules_neither_print_nor_touch_the_standard_streams():
    offenders = {}
    for name, tree in _modules():
        if name.startswith(FRONT) or name in ALLOWED:
            continue
        if found := stream_use(tree):
            offenders[name] = found
    assert offenders == {}, f"speak through a Reporter (genforge.progress) instead: {offenders}"
    assert set(ALLOWED) <= {name for name, _ in _modules()}  # no stale exceptions


def test_no_function_takes_a_progress_flag():
    offenders = {name: found for name, tree in _modules() if (found := progress_flags(tree))}
    assert offenders == {}, f"take reporter: Reporter = SILENT instead: {offenders}"


PLANTED = """
import sys, warnings

def load(path, progress: bool = True):
    if progress:
        print("loading", path, file=sys.stderr)
    sys.stderr.write("done")

def sample(n, *, progress=False, pack_progress=None):
    warnings.warn("sampling")

def pack(files, progress: "Callable[[int, int], None] | None" = None):  # a callback, not a flag
    return files
"""


@pytest.mark.parametrize("check", [stream_use, progress_flags])
def test_the_guard_catches_a_planted_snippet(check):
    found = check(ast.parse(PLANTED))
    if check is stream_use:
        assert found == ["6: print(", "6: sys.stderr", "7: sys.stderr", "10: warnings.warn("], found
    else:
        assert found == ["4: load(progress)", "9: sample(progress)"], found
    assert check(ast.parse("def quiet(reporter=None):\n    reporter.say('x')\n")) == []


def test_the_guard_reads_the_real_package():
    names = {name for name, _ in _modules()}
    assert {"cli.py", "progress.py", "training/runs.py", "data/cache.py"} <= names
    assert sys.modules["genforge.progress"].SILENT is SILENT
