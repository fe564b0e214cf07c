"""TensorBoard event files for a run: losses, speed, evaluations and sample grids as curves.

Written by PyTorch's ``torch.utils.tensorboard.SummaryWriter``; optional (``pip install
tensorboard``, or ``pip install -e '.[tensorboard]'`` in the checkout: SummaryWriter needs the ``tensorboard`` package, not TensorFlow).
Events go in ``run_dir/tensorboard/``, one file per training session; SummaryWriter names it,
and the session number we add at the end makes sessions sort in order and marks our files::

    tensorboard/events.out.tfevents.<time>.<host>.<pid>.0.0001.genforge    first session
    tensorboard/events.out.tfevents.<time>.<host>.<pid>.0.0002.genforge    after the first resume

SummaryWriter writes its file itself, appending as training goes, not through runfolder's
atomic helpers: an event file is a log, and a killed session leaves at most a partial last
record, which every reader skips and the next session's ``truncate`` drops.

Resuming from the checkpoint at step S: a killed session may have logged steps after S, and
those steps will be logged again. The new session's writer is opened with ``purge_step=S + 1``
(TensorBoard's own marker: it hides earlier sessions' events from S + 1 on), and ``truncate``
first removes those events from our files on disk (the rule ``metrics.jsonl`` follows), so a
reader that ignores the marker (``EventAccumulator(purge_orphaned_data=False)``, a pandas
script) sees each step once too. Files that end at or before S are left alone.

``rebuild`` writes the curves again from records (e.g. ``metrics.jsonl``): for a run that
trained without TensorBoard, or whose event files were lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genforge.errors import GenforgeError
from genforge.runfolder import RunFolder, atomic_path

# "tfevents" is how TensorBoard recognises an event file; ".NNNN.genforge" marks the ones we own
# (genforge 0.2's own writer named them events.out.tfevents.NNNN.genforge: still ours).
FILE_PATTERN = re.compile(r"^events\.out\.tfevents\.(?:.+\.)?(\d{4,})\.genforge$")
SKIPPED_KEYS = {"step", "time"}  # bookkeeping in records, not curves (TensorBoard has its own clock)
TRAIN_PREFIX, EVAL_PREFIX = "train", "eval"
INSTALL_HINT = (
    "TensorBoard logging needs the tensorboard package: pip install tensorboard "
    "(or, in the genforge checkout, pip install -e '.[tensorboard]')"
)


def _tensorboard() -> tuple[Any, Any, Any, Any]:
    """SummaryWriter, and tensorboard's event protocol buffer, record reader and record writer
    (for ``truncate``); imported only when TensorBoard logging is on (an optional dependency)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import (  # noqa: PLC0415 (optional)
            RawEventFileLoader,
        )
        from tensorboard.compat.proto import event_pb2  # noqa: PLC0415 (optional dependency)
        from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: PLC0415 (optional)
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (needs the optional package)
    except ImportError as error:
        raise GenforgeError(f"{INSTALL_HINT} ({error})") from None
    return SummaryWriter, event_pb2, RawEventFileLoader, RecordWriter


def available() -> bool:
    """Whether the tensorboard package is installed (so that a config's "auto" can decide)."""
    try:
        _tensorboard()
    except GenforgeError:
        return False
    return True


def events_dir(run_dir: str | Path) -> Path:
    return RunFolder(run_dir).events


def event_files(run_dir: str | Path) -> list[Path]:
    """Our event files in session order (other files in the folder are not ours to touch)."""
    folder = events_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := FILE_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def truncate(run_dir: str | Path, step: int) -> None:
    """Drop events logged after ``step`` from our event files: they will be logged again.

    A file that keeps everything (and ends cleanly) is not rewritten; a file left with no
    summaries is removed. Each rewrite is atomic (temporary file, then rename).
    """
    _, event_pb2, loader, record_writer = _tensorboard()
    for path in event_files(run_dir):
        kept, clean, summaries = [], True, 0
        for data in loader(str(path)).Load():  # complete records; stops at a partial or corrupt one
            try:
                event = event_pb2.Event.FromString(data)
            except Exception:  # protobuf's DecodeError: a corrupt record ends the file
                clean = False
                break
            if event.step <= step:
                kept.append(data)
                summaries += event.HasField("summary")
            else:
                clean = False
        framing = 16  # a record is uint64 length, uint32 crc, the data, uint32 crc
        clean = clean and sum(len(data) + framing for data in kept) == path.stat().st_size
        if summaries == 0:
            path.unlink()
        elif not clean:
            # the temporary name lacks "tfevents", so a running TensorBoard never reads it
            with atomic_path(path, stem=path.name.replace("tfevents", "rewrite")) as tmp:
                writer = record_writer(open(tmp, "wb"))  # noqa: SIM115 - the writer closes it
                for data in kept:
                    writer.write(data)
                writer.close()


# ---------------------------------------------------------------------------------------------
# Writing


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The plottable entries: real numbers, not bools, strings, nested records or bookkeeping."""
    return {
        str(k): float(v)
        for k, v in values.items()
        if k not in SKIPPED_KEYS and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    }


def _check_picture(picture: np.ndarray) -> np.ndarray:
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] not in (1, 3, 4):
        raise GenforgeError(f"a TensorBoard image must be uint8 (H, W, 1|3|4), got {picture.dtype} {picture.shape}")
    return picture


class EventSink:
    """Writes one session's events: ``scalars``, ``evaluation``, ``image``; flushed at every call.

    Build it with ``EventSink.open``; a disabled sink is a ``NullSink`` with the same methods.
    """

    def __init__(self, folder: Path, session: int, purge_step: int | None):
        summary_writer = _tensorboard()[0]
        suffix = f".{session:04d}.genforge"
        self._writer = summary_writer(log_dir=str(folder), purge_step=purge_step, filename_suffix=suffix)
        [self.path] = folder.glob(f"events.out.tfevents.*{suffix}")  # SummaryWriter made it at once

    @classmethod
    def open(cls, run_dir: str | Path, enabled: bool = True, *, step: int = 0) -> EventSink | NullSink:
        """Start a session's event file in ``run_dir/tensorboard/``, continuing from ``step``.

        Events after ``step`` (logged by a session whose work was lost) are removed first.
        Disabled: a ``NullSink``. Enabled without the tensorboard package: a ``GenforgeError``,
        before training starts (pass ``enabled=... and available()`` to get a no-op instead).
        """
        if not enabled:
            return NullSink()
        _tensorboard()
        truncate(run_dir, step)
        folder = events_dir(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        sessions = [int(FILE_PATTERN.match(p.name).group(1)) for p in event_files(run_dir)]
        return cls(folder, max(sessions, default=0) + 1, step + 1 if step else None)

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = TRAIN_PREFIX) -> None:
        """Numbers of ``values`` as ``prefix/key`` curves; anything else is ignored."""
        for key, value in _numbers(values).items():
            self._writer.add_scalar(f"{prefix}/{key}", value, global_step=int(step))
        self._writer.flush()

    def evaluation(self, step: int, values: Mapping[str, Any]) -> None:
        """An in-training evaluation's scores as ``eval/...`` curves."""
        self.scalars(step, values, prefix=EVAL_PREFIX)

    def image(self, step: int, picture: np.ndarray, tag: str = "samples") -> None:
        """A uint8 (H, W, C) picture, e.g. a sample grid (grey is shown as RGB)."""
        self._writer.add_image(tag, _check_picture(picture), global_step=int(step), dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


class NullSink:
    """What a disabled ``EventSink.open`` returns: accepts everything, writes nothing."""

    path = None

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = TRAIN_PREFIX) -> None:
        pass

    def evaluation(self, step: int, values: Mapping[str, Any]) -> None:
        pass

    def image(self, step: int, picture: np.ndarray, tag: str = "samples") -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc) -> bool:
        return False


def rebuild(
    run_dir: str | Path,
    records: Mapping[int, Mapping[str, Any]],
    pictures: Mapping[int, str | Path | np.ndarray] | None = None,
    tag: str = "samples",
) -> Path | None:
    """Replace our event files by one written from ``records`` (step -> values) and ``pictures``.

    A record's numbers become ``train/<key>``; a nested mapping under key K (``"eval"``) becomes
    ``K/<key>``. A picture is a PNG file or a uint8 (H, W, C) array.
    Returns the file written, or None when there was nothing to write.
    """
    _tensorboard()
    for path in event_files(run_dir):
        path.unlink()
    pictures = pictures or {}
    if not records and not pictures:
        return None
    sink = EventSink.open(run_dir)
    with sink:
        for step in sorted(set(records) | set(pictures)):
            record = records.get(step, {})
            sink.scalars(step, record)
            for key, nested in record.items():
                if isinstance(nested, Mapping):
                    sink.scalars(step, nested, prefix=str(key))
            if step in pictures:
                picture = pictures[step]
                sink.image(step, picture if isinstance(picture, np.ndarray) else _png_file(Path(picture)), tag)
    return sink.path


def _png_file(path: Path) -> np.ndarray:
    """A PNG file -> uint8 (H, W, C) with C in 1, 3, 4."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise GenforgeError(f"{path}: not a PNG image")
            if image.mode not in ("L", "RGB", "RGBA"):  # palette, grey + alpha, 16-bit: as RGBA
                image = image.convert("RGBA")
            array = np.asarray(image)
    except OSError as error:
        raise GenforgeError(f"{path}: unreadable picture ({error})") from None
    return array[:, :, None] if array.ndim == 2 else array
