"""The run folder: its names (``RunFolder``), atomic writes, the one record schema of
``metrics.jsonl``, the lock.

``RunFolder(root)`` names every path inside a run folder (``.config``, ``.metrics``,
``.checkpoint(step)``, ``.grid(step)``, ...); no other module spells those names, so the layout
is decided here, once (``tests/test_runfolder.py`` pins it and scans the source).

Every file genforge writes goes through ``atomic_write`` / ``atomic_path`` (a temporary name in
the same folder, then one rename), so a reader never sees half of one and a killed process
leaves at most a hidden ``.tmp`` file, which ``clean_temporary`` removes at the next start.

``metrics.jsonl`` holds one JSON object per line, of one shape:

    {"type": "train", "step": 500, "time": 61.2, "values": {"d_loss": 0.61, "images_per_s": 980.0}}

``type`` is ``train`` (losses and speed, every ``train.log_every`` steps), ``eval`` (an
evaluation during or at the end of training) or ``evaluation`` (a ``genforge evaluate`` result).
``time`` is training seconds (summed over resumes), absent where it does not apply. Lines written
by genforge 0.1 (``{"step", "time", ...losses}``, ``{"step", "eval": {...}}``, ``{"step",
"evaluation": {...}}``) are read as the same records.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from genforge.errors import GenforgeError

try:  # the run folder's lock: flock on POSIX, msvcrt.locking on Windows (see RunLock)
    import fcntl
except ImportError:
    fcntl = None
try:
    import msvcrt
except ImportError:
    msvcrt = None

# Every name inside a run folder, spelled here once (tests/test_runfolder.py pins the layout and
# fails on a name spelled anywhere else): a rename is a decision taken in this file, and the
# names genforge 0.1 wrote stay readable.
CONFIG = "config.yaml"  # the resolved config (train, resumed runs compare against it)
METRICS = "metrics.jsonl"  # the records (see the module's docstring)
SAMPLING = "sampling.json"  # genforge tune's choice (families/sampling.py)
CODES = "codes.npz"  # a prior's training codes, encoded once by its VQ-VAE
REPORT = "report.html"  # genforge report's page
LOCK = ".lock"  # RunLock
CHECKPOINTS = "checkpoints"  # one folder per kept checkpoint, and the pointer to the newest
LATEST = "latest"  # checkpoints/latest: the name of the newest complete checkpoint folder
SAMPLES = "samples"  # sample grids
FINAL_GRID = "final.png"  # samples/final.png: the grid at the end of training
CLASS_GRID = "classes.png"  # samples/classes.png: a row per class (class-conditional GANs)
RECON_GRID = "recon.png"  # reconstructions, at the top or in samples/ (runs of genforge 0.1)
EVENTS = "tensorboard"  # TensorBoard event files (training/tensorboard.py)
STEP_NAME = re.compile(r"step-\d{7,}")  # a checkpoint folder's name; a grid's is the same + .png
RECORD_TYPES = ("train", "eval", "evaluation")
TEMPORARY_PREFIX = ".tmp"


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def step_name(step: int) -> str:
    """``step-0001000``: zero-padded so that names sort by step (up to 9,999,999 steps)."""
    return f"step-{step:07d}"


def step_folders(checkpoints: Path) -> list[Path]:
    """The ``step-NNNNNNN`` folders in a checkpoints folder, oldest first (complete or not)."""
    found = Path(checkpoints).glob("step-*")
    return sorted(p for p in found if STEP_NAME.fullmatch(p.name) and p.is_dir())


@dataclass(frozen=True)
class RunFolder:
    """The paths inside one run folder. Naming only: nothing here touches the disk, except
    ``is_run`` and ``grids``, which look."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str is welcome, a Path is kept

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunFolder | None:
        """The run folder a checkpoint folder sits in (``RUN/checkpoints/step-N``); None for a
        checkpoint folder kept elsewhere (copied out of its run)."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint.parent.parent) if checkpoint.parent.name == CHECKPOINTS else None

    def is_run(self) -> bool:
        """Whether the folder looks like a run: it has a config or a checkpoints folder."""
        return self.config.is_file() or self.checkpoints.is_dir()

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def sampling(self) -> Path:
        return self.root / SAMPLING

    @property
    def codes(self) -> Path:
        return self.root / CODES

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    def grid(self, step: int) -> Path:
        """The sample grid written at ``step``."""
        return self.samples / f"{step_name(step)}.png"

    def grids(self) -> list[Path]:
        """The step grids on disk, oldest first."""
        return sorted(self.samples.glob("step-*.png")) if self.samples.is_dir() else []

    @property
    def final_grid(self) -> Path:
        return self.samples / FINAL_GRID

    @property
    def class_grid(self) -> Path:
        return self.samples / CLASS_GRID

    @property
    def recon_grids(self) -> tuple[Path, Path]:
        """Where genforge 0.1 put its reconstructions, in the order a reader looks."""
        return self.root / RECON_GRID, self.samples / RECON_GRID

    @property
    def events(self) -> Path:
        return self.root / EVENTS


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", stem: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    For writers that want a file name or open the file themselves (``np.savez``, safetensors,
    PIL, TensorBoard's record writer). ``suffix`` keeps an extension some writers insist on
    (``np.savez`` appends ``.npz`` otherwise). ``stem`` replaces ``path``'s name inside the
    temporary name, for folders whose readers pick files by name (TensorBoard reads every file
    whose name holds "tfevents", half-written or not). On any error the temporary file is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise GenforgeError(f"{path}: is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}.{stem or path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, sync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (``sync`` also flushes it to the disk first)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def clean_temporary(folder: Path) -> list[Path]:
    """Remove what a killed writer left behind in the run folder ``folder`` and the folders in it
    that genforge writes to."""
    run = RunFolder(folder)
    removed = []
    for place in (run.root, run.checkpoints, run.samples, run.events):
        if not place.is_dir():
            continue
        for leftover in place.glob(f"{TEMPORARY_PREFIX}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def record(type: str, step: int, values: dict[str, Any], time: float | None = None) -> dict[str, Any]:
    """One line of ``metrics.jsonl``; values are plain numbers, strings or nested dicts."""
    assert type in RECORD_TYPES, type
    out: dict[str, Any] = {"type": type, "step": int(step)}
    if time is not None:
        out["time"] = round(float(time), 3)
    out["values"] = {k: _plain(v) for k, v in values.items()}
    return out


def append_record(run_dir: Path, entry: dict[str, Any]) -> None:
    """Append one record to ``run_dir/metrics.jsonl`` (a whole line per write)."""
    line = json.dumps(entry, allow_nan=True) + "\n"
    # Appended, not rewritten atomically: a line is one write, and a kill mid-line leaves a
    # partial last line, which read_records skips (and keep_records_until drops on resume).
    with open(RunFolder(run_dir).metrics, "a", encoding="utf-8") as f:
        f.write(line)


def read_records(run_dir: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Every record of ``run_dir/metrics.jsonl`` in file order, in the one schema.

    A line cut short by a kill, or otherwise unreadable, is skipped (and counted in ``problems``).
    """
    path = RunFolder(run_dir).metrics
    if not path.is_file():
        return []
    out, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = _normalise(json.loads(line))
        except (json.JSONDecodeError, ValueError, TypeError):
            entry = None
        if entry is None:
            skipped += 1
        else:
            out.append(entry)
    if skipped and problems is not None:
        problems.append(f"skipped {skipped} unreadable line{'s' * (skipped > 1)} of {METRICS}")
    return out


def keep_records_until(run_dir: Path, step: int) -> list[dict[str, Any]]:
    """Drop the training records after ``step`` (they will be logged again on resume) and any
    duplicate or unreadable line; ``evaluate`` results are kept. Returns what is kept."""
    kept, seen = [], set()
    for entry in read_records(run_dir):
        if entry["type"] != "evaluation":
            if entry["step"] > step or (entry["type"], entry["step"]) in seen:
                continue
            seen.add((entry["type"], entry["step"]))
        kept.append(entry)
    path = RunFolder(run_dir).metrics
    if path.exists():
        atomic_write(path, "".join(json.dumps(e) + "\n" for e in kept))
    return kept


def _normalise(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
        return None
    if entry.get("type") in RECORD_TYPES and isinstance(entry.get("values"), dict):
        return entry
    if "type" in entry:
        return None
    # genforge 0.1 lines
    for legacy in ("evaluation", "eval"):
        if isinstance(entry.get(legacy), dict):
            return {"type": legacy, "step": entry["step"], **_time(entry), "values": entry[legacy]}
    values = {k: v for k, v in entry.items() if k not in ("step", "time")}
    return {"type": "train", "step": entry["step"], **_time(entry), "values": values}


def _time(entry: dict[str, Any]) -> dict[str, Any]:
    return {"time": entry["time"]} if isinstance(entry.get("time"), (int, float)) else {}


def _plain(value: Any) -> Any:
    """numpy / torch scalars -> Python numbers, so every value is JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    return value


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# One writer at a time
# ---------------------------------------------------------------------------------------------


def _try_lock(file: IO) -> None:
    """Lock ``file`` exclusively without waiting; OSError when another process holds it."""
    if fcntl is not None:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # the first byte (it may lie past the end)


def _unlock(file: IO) -> None:
    if fcntl is not None:
        fcntl.flock(file, fcntl.LOCK_UN)
    elif msvcrt is not None:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)


class RunLock:
    """An exclusive lock on a run folder for as long as a training process writes into it.

    On ``run_dir/.lock``: ``flock`` on POSIX, ``msvcrt.locking`` on Windows. The operating system
    releases either when the process ends, however it ends (``kill -9`` included), so a killed run
    never leaves a stale lock behind.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._file = None

    def __enter__(self) -> RunLock:
        if fcntl is None and msvcrt is None:
            raise GenforgeError("this platform has neither fcntl nor msvcrt, so a run folder cannot be locked")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Opened for appending and never written: the lock file's content is nothing, its handle the lock.
        self._file = open(RunFolder(self.run_dir).lock, "a")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            _try_lock(self._file)
        except OSError as e:
            self._file.close()
            self._file = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                raise GenforgeError(
                    f"{self.run_dir}: another genforge process is training into this folder; "
                    "wait for it to finish or stop it first"
                ) from None
            raise
        return self

    def __exit__(self, *exc) -> bool:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None
        return False


# ---------------------------------------------------------------------------------------------
# Containment
# ---------------------------------------------------------------------------------------------


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symbolic links resolved) lies within ``root``."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True
