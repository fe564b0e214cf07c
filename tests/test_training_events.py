"""TensorBoard events written by the training loop: the same (step, value) pairs as metrics.jsonl
for every scalar, sample grids as images, and a resumed run continues the curves without
logging a step twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genforge import families
from genforge.errors import GenforgeError
from genforge.runfolder import read_records
from genforge.training import runs
from genforge.training import tensorboard as tb
from synthetic import COMMON, TINY_GAN, install_evaluator, write_npz

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402 (after the skip)
    IMAGES,
    SCALARS,
    EventAccumulator,
)

GAN = families.get("gan")
SETTINGS = [
    "train.steps=10",
    "train.checkpoint_every=3",
    "train.log_every=2",
    "train.sample_every=4",
    "train.eval_every=5",
    "train.eval_samples=32",
    "train.device=cpu",
]


def config(data: Path, *sets: str):
    return GAN.resolve("default", None, [*COMMON, *TINY_GAN, *SETTINGS, *sets], {"data": {"source": str(data)}})


def events(run: Path) -> EventAccumulator:
    # no purging of "orphaned" events: a step logged twice must show up here
    acc = EventAccumulator(str(tb.events_dir(run)), size_guidance={SCALARS: 0, IMAGES: 0}, purge_orphaned_data=False)
    return acc.Reload()


def curves_of_records(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard would show it: train/<key> and eval/<key> per numeric value."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in read_records(run):
        for key, value in r["values"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(f"{r['type']}/{key}", []).append((r["step"], value))
    return curves


def test_events_match_the_records_across_a_lost_checkpoint_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    data = write_npz(tmp_path / "data.npz", n=64)
    install_evaluator(tmp_path / "cache", str(data))
    run = tmp_path / "run"
    first = runs.train(GAN, config(data, "train.tensorboard=true"), run, stop_after=8)
    assert first.step == 8 and first.interrupted
    # killed after logging step 8 but before its checkpoint: the next session resumes from step 6
    shutil.rmtree(run / "checkpoints" / "step-0000008")
    (run / "checkpoints" / "latest").unlink()
    second = runs.train(GAN, config(data, "train.tensorboard=true"), run)
    assert second.step == 10 and not second.interrupted

    acc = events(run)
    expected = curves_of_records(run)
    assert set(expected) >= {"train/d_loss", "train/g_loss", "train/images_per_s", "eval/fd"}
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for tag, pairs in expected.items():
        logged = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in pairs], tag  # each step once, in order
        assert [value for _, value in logged] == pytest.approx([value for _, value in pairs], rel=1e-6), tag
    assert [step for step, _ in expected["train/d_loss"]] == [2, 4, 6, 8, 10]
    assert [step for step, _ in expected["eval/fd"]] == [5, 10]
    assert [e.step for e in acc.Images("samples")] == [4, 8, 10]  # periodic grids and the final one
    assert len(tb.event_files(run)) == 2  # one file per session


def test_tensorboard_off_writes_no_events_and_on_without_the_package_is_refused(tmp_path, monkeypatch):
    data = write_npz(tmp_path / "data.npz", n=32)
    quick = ["train.steps=2", "train.eval_every=0"]
    runs.train(GAN, config(data, *quick, "train.tensorboard=false"), tmp_path / "off")
    assert not tb.events_dir(tmp_path / "off").exists()

    monkeypatch.setattr(tb, "available", lambda: False)
    runs.train(GAN, config(data, *quick), tmp_path / "auto")  # null: on only when installed
    assert not tb.events_dir(tmp_path / "auto").exists()
    with pytest.raises(GenforgeError, match="train.tensorboard is true: TensorBoard logging needs"):
        runs.train(GAN, config(data, *quick, "train.tensorboard=true"), tmp_path / "on")
    assert not (tmp_path / "on").exists()  # refused before anything was written
