"""The run folder's names live in one place (``RunFolder``), its layout is pinned, and every file
is written atomically."""

from __future__ import annotations

import ast
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from genforge import checkpoint as ckpt
from genforge import runfolder
from genforge.metrics import evaluate
from genforge.runfolder import RunFolder, atomic_path, atomic_write, clean_temporary
from synthetic import cli, train, write_npz

SOURCE = Path(runfolder.__file__).parent  # src/genforge

# Each name inside a run folder, and the one module allowed to spell it.
HOMES = {
    **{
        name: "runfolder.py"
        for name in (
            runfolder.CONFIG,
            runfolder.METRICS,
            runfolder.SAMPLING,
            runfolder.CODES,
            runfolder.REPORT,
            runfolder.LOCK,
            runfolder.CHECKPOINTS,
            runfolder.LATEST,
            runfolder.SAMPLES,
            runfolder.FINAL_GRID,
            runfolder.CLASS_GRID,
            runfolder.RECON_GRID,
            runfolder.EVENTS,
        )
    },
    ckpt.META: "checkpoint.py",  # inside a checkpoint folder: checkpoint.py's own layout
    ckpt.TENSORS: "checkpoint.py",
}
# The same words where they name no path, with how often each module may use them (a new use,
# even in an allowed module, fails until it is added here with its reason).
NOT_PATHS = {
    # the TensorBoard image tag of sample grids (EventSink.image, NullSink.image, rebuild): a
    # label in TensorBoard's UI, and renaming samples/ must not rename users' curves
    ("training/tensorboard.py", "samples"): 3,
    # FamilySpec.grid_caption's default: the words under a grid in the report
    ("families/registry.py", "samples"): 1,
    # the same caption for a run of a family this installation does not know
    ("report/render.py", "samples"): 1,
    # the config key train.tensorboard in RESUMABLE: a setting, not the events folder
    ("training/runs.py", "tensorboard"): 1,
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or bare string statements (prose)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _run_folder_names(path: Path) -> list[str]:
    """The string constants of ``path`` that spell a run-folder name or a step name (``step-``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in prose:
            continue
        if node.value in HOMES or node.value.startswith("step-"):
            found.append(node.value)
    return found


def test_run_folder_names_are_spelled_in_their_home_module_only():
    seen: Counter = Counter()
    wrong = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = path.relative_to(SOURCE).as_posix()
        for name in _run_folder_names(path):
            home = HOMES.get(name, "runfolder.py")  # step names: runfolder.step_name, STEP_NAME
            if module == home:
                continue
            seen[(module, name)] += 1
            if seen[(module, name)] > NOT_PATHS.get((module, name), 0):
                wrong.append(f"{module}: {name!r}")
    assert not wrong, f"run-folder names spelled outside their home (use RunFolder): {wrong}"
    # the allowlist stays exact: an entry whose use went away is removed, not left to cover a new one
    assert {k: seen[k] for k in NOT_PATHS} == NOT_PATHS


def test_the_scan_sees_a_hand_spelled_name(tmp_path):
    """The scan above finds names in paths and f-strings, and skips docstrings."""
    module = tmp_path / "m.py"
    module.write_text(
        '"""Writes samples/ and metrics.jsonl."""\n'
        'def f(run, step):\n    """config.yaml"""\n'
        '    return run / "samples" / f"step-{step:07d}.png", run / "metrics.jsonl"\n'
    )
    assert sorted(_run_folder_names(module)) == ["metrics.jsonl", "samples", "step-"]


# Writers that put bytes in a file. Inside ``with atomic_path(...)`` they write the temporary
# file, which is what runfolder wants; anywhere else each use needs a reason below.
WRITERS = {"write_text", "write_bytes", "save", "savez", "savez_compressed", "save_file", "tofile"}
PLAIN_WRITES = {
    # appends one whole line per record; read_records skips a line a kill cut short
    ("runfolder.py", "open"): 2,  # and RunLock's lock file, opened for appending, never written
    # a checkpoint's two files, inside a temporary folder that one rename puts in place
    ("checkpoint.py", "save_file"): 1,
    ("checkpoint.py", "write_text"): 1,
    # a packed dataset's files, inside a temporary folder that one rename puts in place
    ("data/packed.py", "open"): 2,
    ("data/packed.py", "write_text"): 1,
}


def _writes(path: Path) -> list[str]:
    """What ``path`` calls to write a file outside a ``with atomic_path(...)`` block: ``open`` in a
    writing mode, ``write_text``, ``np.savez``, ``save_file``, ... (``ckpt.save`` and other
    methods named ``save`` only when they belong to numpy or torch)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside_atomic: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", None) == "atomic_path"
            for item in node.items
        ):
            inside_atomic |= {id(inner) for part in (*node.items, *node.body) for inner in ast.walk(part)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in inside_atomic:
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            mode = (
                node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                found.append("open")
        elif isinstance(func, ast.Name) and func.id in WRITERS - {"save"}:
            found.append(func.id)
        elif isinstance(func, ast.Attribute) and func.attr in WRITERS:
            owner = getattr(func.value, "id", None)
            if func.attr != "save" or owner in ("np", "torch"):
                found.append(func.attr)
    return found


def test_every_file_write_goes_through_the_atomic_helpers():
    seen: Counter = Counter()
    for path in sorted(SOURCE.rglob("*.py")):
        module = path.relative_to(SOURCE).as_posix()
        for writer in _writes(path):
            seen[(module, writer)] += 1
    assert dict(seen) == PLAIN_WRITES, "write through runfolder.atomic_write / atomic_path, or give the reason here"


def test_the_write_scan_sees_a_plain_write(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f(path, tmp, arrays):\n"
        "    path.write_text('x')\n"
        "    np.savez(path, **arrays)\n"
        "    open(path, mode='wb')\n"
        "    open(path)\n"  # reading
        "    ckpt.save(path)\n"  # genforge's own writer, atomic itself
        "    with atomic_path(path) as tmp, open(tmp, 'wb') as f:\n"
        "        np.savez(f, **arrays)\n"
    )
    assert sorted(_writes(module)) == ["open", "savez", "write_text"]


# ---------------------------------------------------------------------------------------------
# The layout, pinned: a rename here is a decision (old runs must still load)


def test_layout_is_pinned(tmp_path):
    run = RunFolder(tmp_path)
    expected = {
        run.config: "config.yaml",
        run.metrics: "metrics.jsonl",
        run.sampling: "sampling.json",
        run.codes: "codes.npz",
        run.report: "report.html",
        run.lock: ".lock",
        run.checkpoints: "checkpoints",
        run.latest: "checkpoints/latest",
        run.checkpoint(1000): "checkpoints/step-0001000",
        run.checkpoint(12_345_678): "checkpoints/step-12345678",
        run.samples: "samples",
        run.grid(40): "samples/step-0000040.png",
        run.final_grid: "samples/final.png",
        run.class_grid: "samples/classes.png",
        run.recon_grids[0]: "recon.png",
        run.recon_grids[1]: "samples/recon.png",
        run.events: "tensorboard",
    }
    assert {path.relative_to(tmp_path).as_posix(): name for path, name in expected.items()} == {
        name: name for name in expected.values()
    }
    assert RunFolder(str(tmp_path)) == run and isinstance(RunFolder(str(tmp_path)).root, Path)


def test_of_checkpoint(tmp_path):
    step = RunFolder(tmp_path).checkpoint(7)
    assert RunFolder.of_checkpoint(step) == RunFolder(tmp_path)
    assert RunFolder.of_checkpoint(str(step)) == RunFolder(tmp_path)
    assert RunFolder.of_checkpoint(tmp_path / "copied" / "step-0000007") is None


def test_is_run_and_grids(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not run.is_run() and run.grids() == []
    run.checkpoints.mkdir(parents=True)
    assert run.is_run()
    run.samples.mkdir()
    for step in (20, 10):
        run.grid(step).write_bytes(b"")
    run.final_grid.write_bytes(b"")
    assert run.grids() == [run.grid(10), run.grid(20)]


def test_a_run_writes_only_the_names_runfolder_gives(tmp_path):
    """A class-conditional GAN with TensorBoard, its report: every file is one RunFolder names."""
    data = write_npz(tmp_path / "bars.npz", n=64)
    out = train(
        "gan",
        tmp_path / "run",
        data=data,
        steps=4,
        extra=["train.sample_every=2", "train.tensorboard=true"],
        options=["--preset", "conditional"],
    )
    code, _, err = cli("report", out)
    assert code == 0, err
    run = RunFolder(out)
    named = {run.config, run.metrics, run.lock, run.latest, run.report, run.final_grid, run.class_grid}
    named |= {run.grid(2), run.grid(4)}
    files = {p for p in out.rglob("*") if p.is_file()}
    checkpoint_files = {p for p in files if p.parent in runfolder.step_folders(run.checkpoints)}
    events = {p for p in files if p.parent == run.events}
    assert files - checkpoint_files - events == named
    assert {p.name for p in checkpoint_files} == {ckpt.META, ckpt.TENSORS}
    assert events and all("tfevents" in p.name for p in events)


# ---------------------------------------------------------------------------------------------
# Atomic writes: a writer that fails leaves the old file and no partial one


class Boom(Exception):
    pass


def _folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir()}


def test_atomic_path_leaves_nothing_partial_when_the_writer_raises(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the ne")
        raise Boom
    assert _folder(target) == {"out.bin": b"old"}
    with pytest.raises(Boom), atomic_path(tmp_path / "fresh.bin") as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert _folder(target) == {"out.bin": b"old"}


def test_atomic_write_leaves_nothing_partial_when_encoding_fails(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write(target, "a: 1\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(target, "b: \ud800\n")  # a lone surrogate: fails once the file is open
    assert _folder(target) == {"config.yaml": b"a: 1\n"}


def test_atomic_path_stem_names_the_temporary_file(tmp_path):
    target = tmp_path / "events.out.tfevents.1.genforge"
    with atomic_path(target, stem="events.out.rewrite.1.genforge") as tmp:
        assert tmp.parent == tmp_path and "tfevents" not in tmp.name
        assert tmp.name.startswith(runfolder.TEMPORARY_PREFIX)
        tmp.write_bytes(b"events")
    assert _folder(target) == {target.name: b"events"}
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o644)


def test_feature_cache_write_is_atomic(tmp_path, monkeypatch):
    """metrics.evaluate's real-data statistics go through atomic_path: a failed write keeps the old cache."""
    ref = evaluate.Reference(
        extractor="x",
        features=np.zeros((3, 2), np.float32),
        mu=np.zeros(2),
        sigma=np.eye(2),
        radii_pr=np.ones(3),
        radii_dc=np.ones(3),
        class_hist=None,
        key="k",
    )
    path = tmp_path / "ref.npz"
    evaluate._save_npz(path, ref)
    before = path.read_bytes()
    assert evaluate._load_npz(path).key == "k"

    def half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half")
        raise Boom

    monkeypatch.setattr(evaluate.np, "savez", half_then_fail)
    with pytest.raises(Boom):
        evaluate._save_npz(path, ref)
    assert _folder(path) == {"ref.npz": before}


def test_clean_temporary_reaches_every_folder_genforge_writes(tmp_path):
    run = RunFolder(tmp_path)
    leftovers = []
    for place in (run.root, run.checkpoints, run.samples, run.events):
        place.mkdir(exist_ok=True)
        leftover = place / f"{runfolder.TEMPORARY_PREFIX}.x.123"
        leftover.write_bytes(b"half")
        leftovers.append(leftover)
    kept = run.events / "events.out.tfevents.1.0001.genforge"
    kept.write_bytes(b"")
    assert sorted(clean_temporary(tmp_path)) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers) and kept.exists()
