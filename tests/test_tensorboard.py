"""TensorBoard events: written, truncated on resume with no duplicate step, read back by TensorBoard."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from genforge.errors import GenforgeError
from genforge.images import save_grid
from genforge.training import tensorboard as tb

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402 (after the skip)
    IMAGES,
    SCALARS,
    EventAccumulator,
)


def read(run_dir, purge: bool = False) -> EventAccumulator:
    # by default no purging of "orphaned" events: a duplicate step on disk must show up here;
    # purge=True reads as TensorBoard does, honouring the resumed writer's purge_step
    acc = EventAccumulator(
        str(tb.events_dir(run_dir)), size_guidance={SCALARS: 0, IMAGES: 0}, purge_orphaned_data=purge
    )
    return acc.Reload()


def curve(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)]


def pixels(image) -> int:
    """The one value of a picture(step) read back from its event."""
    values = np.unique(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))))
    assert len(values) == 1
    return int(values[0])


def picture(step: int) -> np.ndarray:
    return np.full((6, 10, 3), step, np.uint8)  # colour, the step as its value


def log_session(run_dir, steps, offset: float, resume_from: int = 0):
    with tb.EventSink.open(run_dir, True, step=resume_from) as sink:
        for step in steps:
            sink.scalars(step, {"step": step, "time": 1.0, "d_loss": step / 100 + offset, "images_per_s": 900.0})
            if step % 30 == 0:
                sink.evaluation(step, {"fd": step + offset, "features": "classifier"})
            if step % 20 == 0:
                sink.image(step, picture(step + int(offset)))
    return sink.path


def test_resume_continues_the_curves_without_duplicates(tmp_path):
    run = tmp_path / "run"
    first = log_session(run, range(10, 70, 10), offset=0.0)  # logged up to 60 ...
    with open(first, "ab") as f:
        f.write(struct.pack("<QI", 100, 0) + b"\x08" * 28)  # ... and killed in the middle of a record
    second = log_session(run, range(50, 90, 10), offset=1.0, resume_from=40)  # ... but the checkpoint was at 40
    assert [p.name for p in tb.event_files(run)] == [first.name, second.name] and first.name < second.name

    acc = read(run)
    assert sorted(acc.Tags()["scalars"]) == ["eval/fd", "train/d_loss", "train/images_per_s"]
    assert curve(acc, "train/d_loss") == [
        (10, 0.1),
        (20, 0.2),
        (30, 0.3),
        (40, 0.4),
        (50, 1.5),
        (60, 1.6),
        (70, 1.7),
        (80, 1.8),
    ]
    assert curve(acc, "eval/fd") == [(30, 30.0), (60, 61.0)]
    as_tensorboard_shows_it = read(run, purge=True)  # the purge marker at step 41 hides nothing of step 40
    assert curve(as_tensorboard_shows_it, "train/d_loss") == curve(acc, "train/d_loss")
    assert [s for s, _ in curve(acc, "train/images_per_s")] == [10, 20, 30, 40, 50, 60, 70, 80]
    images = acc.Images("samples")
    assert [(i.step, i.width, i.height) for i in images] == [(20, 10, 6), (40, 10, 6), (60, 10, 6), (80, 10, 6)]
    assert pixels(images[2]) == 61  # step 60 is the resumed session's


def test_truncate_leaves_complete_files_alone_and_drops_emptied_ones(tmp_path):
    run = tmp_path / "run"
    first = log_session(run, [10, 20], offset=0.0)
    second = log_session(run, [30, 40], offset=0.0, resume_from=20)
    before = first.stat().st_mtime_ns, first.read_bytes()
    tb.truncate(run, 20)  # a resume from step 20 again: the second session's work is lost
    assert tb.event_files(run) == [first]
    assert (first.stat().st_mtime_ns, first.read_bytes()) == before
    assert not second.exists()
    assert sorted(p.name for p in tb.events_dir(run).iterdir()) == [first.name]  # no temporary left


def test_rebuild_from_records_and_sample_grids(tmp_path):
    run = tmp_path / "run"
    log_session(run, range(10, 70, 10), offset=5.0)  # stale files: replaced
    (tb.events_dir(run) / "someone-elses.txt").write_text("kept")
    records = {
        10: {"step": 10, "time": 1.0, "d_loss": 0.6, "g_loss": 1.9},
        20: {"step": 20, "time": 2.0, "d_loss": 0.5, "g_loss": 1.8, "eval": {"fd": 40.0, "data": "x"}},
    }
    grid = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
    save_grid(grid, run / "samples" / "step-0000020.png")
    path = tb.rebuild(run, records, {10: picture(10), 20: run / "samples" / "step-0000020.png"})
    assert tb.event_files(run) == [path] and (tb.events_dir(run) / "someone-elses.txt").exists()
    acc = read(run)
    assert curve(acc, "train/d_loss") == [(10, 0.6), (20, 0.5)]
    assert curve(acc, "eval/fd") == [(20, 40.0)]
    assert [i.step for i in acc.Images("samples")] == [10, 20]
    shown = np.asarray(Image.open(io.BytesIO(acc.Images("samples")[1].encoded_image_string)))
    np.testing.assert_array_equal(shown[..., 0], np.asarray(Image.open(run / "samples" / "step-0000020.png")))
    assert tb.rebuild(run, {}, {}) is None and tb.event_files(run) == []


def test_disabled_writes_nothing(tmp_path):
    sink = tb.EventSink.open(tmp_path / "run", False, step=10)
    sink.scalars(1, {"loss": 1.0})
    sink.evaluation(1, {"fd": 1.0})
    sink.image(1, picture(1))
    sink.close()
    assert not (tmp_path / "run").exists()


def test_bad_picture_and_missing_package(tmp_path, monkeypatch):
    with tb.EventSink.open(tmp_path / "run") as sink, pytest.raises(GenforgeError, match="uint8"):
        sink.image(1, np.zeros((4, 4), np.float32))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    assert not tb.available()
    with pytest.raises(
        GenforgeError,
        match=r"pip install tensorboard \(or, in the genforge checkout, pip install -e '\.\[tensorboard\]'\)",
    ):
        tb.EventSink.open(tmp_path / "run2", True)
    assert isinstance(tb.EventSink.open(tmp_path / "run2", False), tb.NullSink)
