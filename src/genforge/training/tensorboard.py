"""TensorBoard event files for a run: losses, speed, evaluations and sample grids as curves.

Optional (``pip install tensorboard``, or ``pip install -e '.[tensorboard]'`` in the checkout):
only the ``tensorboard`` package's protocol buffers are used, no TensorFlow and no writer thread.
Events go in ``run_dir/tensorboard/``, one file per training session, named so that sessions sort
in order::

    tensorboard/events.out.tfevents.0001.genforge    first session
    tensorboard/events.out.tfevents.0002.genforge    after the first resume, ...

Resuming: a killed session may have logged steps after the checkpoint the next session
resumes from, and those steps will be logged again. ``EventSink.open(run_dir, step=S)`` first
truncates our event files to the events at or before step S (the rule ``metrics.jsonl``
follows), copying the kept records byte for byte, so every reader (TensorBoard's data server,
``EventAccumulator``, pandas scripts) sees each step once. TensorBoard's own answer, a
``SessionLog.START`` purge marker, is honoured by some readers and not by others, and it leaves
the duplicates on disk. Files from earlier sessions that end at or before S are left alone,
so a resume costs time in proportion to the lost session, not the run.

``rebuild`` writes the curves again from records (e.g. ``metrics.jsonl``): for a run that
trained without TensorBoard, or whose event files were lost.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from genforge.errors import GenforgeError

EVENTS_DIR = "tensorboard"
# "tfevents" is how TensorBoard recognises an event file; ".genforge" marks the ones we own.
FILE_PATTERN = re.compile(r"^events\.out\.tfevents\.(\d{4,})\.genforge$")
FILE_VERSION = "brain.Event:2"
SKIPPED_KEYS = {"step", "time"}  # bookkeeping in records, not curves (TensorBoard has its own clock)
TRAIN_PREFIX, EVAL_PREFIX = "train", "eval"
INSTALL_HINT = (
    "TensorBoard logging needs the tensorboard package: pip install tensorboard "
    "(or, in the genforge checkout, pip install -e '.[tensorboard]')"
)


def _protos() -> tuple[ModuleType, ModuleType, Any]:
    """tensorboard's event/summary protocol buffers and its record checksum; imported only when
    TensorBoard logging is on, because it is an optional dependency."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415 (optional dependency)
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # noqa: PLC0415 (optional)
    except ImportError as error:
        raise GenforgeError(f"{INSTALL_HINT} ({error})") from None
    return event_pb2, summary_pb2, masked_crc32c


def available() -> bool:
    """Whether the tensorboard package is installed (so that a config's "auto" can decide)."""
    try:
        _protos()
    except GenforgeError:
        return False
    return True


def events_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVENTS_DIR


def event_files(run_dir: str | Path) -> list[Path]:
    """Our event files in session order (other files in the folder are not ours to touch)."""
    folder = events_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := FILE_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def _file_name(session: int) -> str:
    return f"events.out.tfevents.{session:04d}.genforge"


# ---------------------------------------------------------------------------------------------
# Records: the TFRecord framing TensorBoard reads (little-endian)
#   uint64 length | uint32 masked crc32c(length) | data[length] | uint32 masked crc32c(data)


def _frame(data: bytes, crc: Any) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", crc(header)) + data + struct.pack("<I", crc(data))


def _raw_records(path: Path, crc: Any) -> list[tuple[bytes, bytes]]:
    """Complete records of one file as (whole framed record, event bytes).

    Stops at the first incomplete or corrupt record: the tail a killed writer leaves behind.
    The data checksum is not recomputed (pure-Python crc32c costs ~0.3 s per MB of images);
    a bad record still fails to parse, or its length check, and ends the file there.
    """
    blob = path.read_bytes()
    records, offset = [], 0
    while offset + 12 <= len(blob):
        header = blob[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", blob[offset + 8 : offset + 12])
        end = offset + 12 + length + 4
        if header_crc != crc(header) or end > len(blob):
            break
        records.append((blob[offset:end], blob[offset + 12 : end - 4]))
        offset = end
    return records


def truncate(run_dir: str | Path, step: int) -> None:
    """Drop events logged after ``step`` from our event files: they will be logged again.

    A file that keeps everything (and ends cleanly) is not rewritten; a file left with no
    summaries is removed. Each rewrite is atomic (temporary file, then rename).
    """
    event_pb2, _, crc = _protos()
    for path in event_files(run_dir):
        records = _raw_records(path, crc)
        kept, clean, summaries = [], True, 0
        for framed, data in records:
            try:
                event = event_pb2.Event.FromString(data)
            except Exception:  # protobuf's DecodeError: a corrupt record ends the file
                clean = False
                break
            if event.step <= step:
                kept.append(framed)
                summaries += event.HasField("summary")
            else:
                clean = False
        clean = clean and sum(map(len, kept)) == path.stat().st_size
        if summaries == 0:
            path.unlink()
        elif not clean:
            # the temporary name lacks "tfevents", so a running TensorBoard never reads it
            tmp = path.with_name(f".{path.name.replace('tfevents', 'rewrite')}.tmp")
            tmp.write_bytes(b"".join(kept))
            os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Writing


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The plottable entries: real numbers, not bools, strings, nested records or bookkeeping."""
    return {
        str(k): float(v)
        for k, v in values.items()
        if k not in SKIPPED_KEYS and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    }


def _png(picture: np.ndarray) -> tuple[bytes, int, int, int]:
    """uint8 (H, W, C) with C in 1, 3, 4 -> PNG bytes, height, width, channels."""
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] not in (1, 3, 4):
        raise GenforgeError(f"a TensorBoard image must be uint8 (H, W, 1|3|4), got {picture.dtype} {picture.shape}")
    height, width, channels = picture.shape
    buffer = io.BytesIO()
    Image.fromarray(picture[:, :, 0] if channels == 1 else picture).save(buffer, format="PNG")
    return buffer.getvalue(), height, width, channels


class EventSink:
    """Writes one session's events: ``scalars``, ``evaluation``, ``image``; flushed at every call.

    Build it with ``EventSink.open``; a disabled sink is a ``NullSink`` with the same methods.
    """

    def __init__(self, path: Path):
        self._event_pb2, self._summary_pb2, self._crc = _protos()
        self.path = path
        self._file = open(path, "xb")  # a new session never appends to an old file
        self._write(self._event_pb2.Event(wall_time=time.time(), step=0, file_version=FILE_VERSION))

    @classmethod
    def open(cls, run_dir: str | Path, enabled: bool = True, *, step: int = 0) -> EventSink | NullSink:
        """Start a session's event file in ``run_dir/tensorboard/``, continuing from ``step``.

        Events after ``step`` (logged by a session whose work was lost) are removed first.
        Disabled: a ``NullSink``. Enabled without the tensorboard package: a ``GenforgeError``,
        before training starts (pass ``enabled=... and available()`` to get a no-op instead).
        """
        if not enabled:
            return NullSink()
        _protos()
        truncate(run_dir, step)
        folder = events_dir(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        sessions = [int(FILE_PATTERN.match(p.name).group(1)) for p in event_files(run_dir)]
        return cls(folder / _file_name(max(sessions, default=0) + 1))

    def _write(self, event: Any) -> None:
        self._file.write(_frame(event.SerializeToString(), self._crc))
        self._file.flush()

    def _summary(self, step: int, values: list[Any]) -> None:
        if values:
            summary = self._summary_pb2.Summary(value=values)
            self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = TRAIN_PREFIX) -> None:
        """Numbers of ``values`` as ``prefix/key`` curves; anything else is ignored."""
        value = self._summary_pb2.Summary.Value
        self._summary(step, [value(tag=f"{prefix}/{k}", simple_value=v) for k, v in _numbers(values).items()])

    def evaluation(self, step: int, values: Mapping[str, Any]) -> None:
        """An in-training evaluation's scores as ``eval/...`` curves."""
        self.scalars(step, values, prefix=EVAL_PREFIX)

    def image(self, step: int, picture: np.ndarray, tag: str = "samples") -> None:
        """A uint8 (H, W, C) picture, e.g. a sample grid."""
        png, height, width, channels = _png(picture)
        self._image(step, png, height, width, channels, tag)

    def _image(self, step: int, png: bytes, height: int, width: int, channels: int, tag: str) -> None:
        picture = self._summary_pb2.Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        self._summary(step, [self._summary_pb2.Summary.Value(tag=tag, image=picture)])

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

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
    ``K/<key>``. A picture is a PNG file (embedded as it is) or a uint8 (H, W, C) array.
    Returns the file written, or None when there was nothing to write.
    """
    _protos()
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
                if isinstance(picture, np.ndarray):
                    sink.image(step, picture, tag)
                else:
                    sink._image(step, *_png_file(Path(picture)), tag)
    return sink.path


def _png_file(path: Path) -> tuple[bytes, int, int, int]:
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise GenforgeError(f"{path}: not a PNG image")
            channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(image.mode, 0)
            if channels in (0, 2):  # palette or grey+alpha: re-encode as a plain picture
                return _png(np.asarray(image.convert("RGBA")))
            return data, image.height, image.width, channels
    except OSError as error:
        raise GenforgeError(f"{path}: unreadable picture ({error})") from None
