"""Packed datasets: uint8 images in one raw file that is read a batch at a time, for sets larger
than memory. ``pack_dataset`` (pack.py) writes one from any source genforge reads.

A packed dataset is a folder:
    header.json   {"format": "genforge-packed", "version": 1, "count": N, "height": H, "width": W,
                   "channels": C, "labelled": bool, "class_names": [...] | null, "source": "...",
                   "packed_with": {...}, "checksums": {"images.u8": "blake2b:HEX", "labels.i64": ...}}
    images.u8     N * H * W * C bytes: uint8 (N, H, W, C), C order, no header: a raw array any tool
                  reads (``np.fromfile``, or ``np.memmap`` with that shape); genforge does not map it
    labels.i64    N little-endian int64, only when labelled

One images file, not shards: a rank's share is a set of indices (``rank_indices``), not a file,
and positioned reads reach any image of one file as cheaply as of many; one file also keeps the
size check exact. Shards would pay off only for copying to many machines or for a filesystem's
size limit, neither of which genforge meets.

Reading: ``PackedImages.take(indices)`` reads just those images with positioned reads (pread:
sorted, coalesced into runs of consecutive indices) into a fresh array, never through a memory
map. Touched pages of a memory map count in the process's resident memory, so a map swept
through a whole epoch grows RSS to the dataset's size; positioned reads leave the pages to the
kernel's page cache, which it can drop.

Checks: opening checks the header and both files' sizes, and the labels' checksum (they are read
whole anyway). The images' checksum (BLAKE2b of the file, computed while packing) is checked by
every pass that reads the whole file in order: ``chunks()`` to its end (``genforge data info``,
re-packing) and ``verify()``; a batch read (``take``) checks only that the file has its size.
Packs written before checksums existed have none, and open as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from genforge.errors import GenforgeError

FORMAT = "genforge-packed"
VERSION = 1
HEADER = "header.json"
IMAGES = "images.u8"
LABELS = "labels.i64"
_LABEL_DTYPE = np.dtype("<i8")  # little-endian on disk whatever the machine
CHUNK_BYTES = 64 << 20  # how much one streamed read holds: small beside memory, large beside a syscall


def _hasher():
    return hashlib.blake2b(digest_size=32)


def _digest(hasher) -> str:
    return f"blake2b:{hasher.hexdigest()}"


def is_packed(path: Path) -> bool:
    """A folder with a header.json or an images.u8: opening it checks the rest and says what is wrong."""
    return path.is_dir() and ((path / HEADER).is_file() or (path / IMAGES).is_file())


def check_replaceable(out: Path, overwrite: bool) -> None:
    """An existing ``out`` is replaced only when asked, and only if it is itself a packed dataset,
    so a mistyped --out can never delete someone's folder."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise GenforgeError(f"{out}: already exists; choose another --out, or pass --overwrite to replace it")
    try:
        _read_header(out)
    except GenforgeError:
        raise GenforgeError(f"{out}: exists and is not a packed dataset; refusing to replace it") from None


class PackWriter:
    """Appends chunks of uint8 (n, H, W, C) images (and int64 labels) to a new packed dataset.

        with PackWriter(out, 64, 64, 3, class_names) as writer:
            for images, labels in chunks:
                writer.append(images, labels)
        summary = writer.summary

    Everything is written into a hidden folder beside ``out`` and renamed into place by
    ``close()``; an error (or leaving the block by an exception) removes it, so ``out`` is never
    half-written. Labels are all given or all None, fixed by the first append.
    """

    def __init__(
        self,
        out: Path | str,
        height: int,
        width: int,
        channels: int,
        class_names: Sequence[str] | None = None,
        *,
        source: str = "",
        packed_with: dict | None = None,
        overwrite: bool = False,
    ):
        if channels not in (1, 3) or height <= 0 or width <= 0:
            raise ValueError(
                f"images must be (H, W, C) with H, W > 0 and C in 1, 3; got ({height}, {width}, {channels})"
            )
        self.out = Path(out).expanduser()
        self.overwrite = overwrite
        check_replaceable(self.out, overwrite)  # before any work: a long pack must not fail at its end
        self.image_shape = (height, width, channels)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.source, self.packed_with = source, packed_with or {}
        self.count, self.labelled, self.summary = 0, None, None
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._temp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        # Plain writes, not runfolder's atomic helpers: the files grow chunk by chunk inside a
        # temporary folder, and the folder's rename (_move_into_place) makes the pack appear whole.
        self._images = open(self._temp / IMAGES, "wb")
        self._labels = None
        self._hashes = {IMAGES: _hasher(), LABELS: _hasher()}

    def append(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add uint8 (n, H, W, C) images and, if the pack is labelled, int64 (n,) labels."""
        if self._images is None:
            raise ValueError("append after close")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.image_shape:
            height, width, channels = self.image_shape
            raise GenforgeError(
                f"{self.out}: images of {images.dtype} {images.shape} do not fit this pack of "
                f"uint8 (n, {height}, {width}, {channels}); every image must have the same size and channels"
            )
        if self.labelled is None:
            self.labelled = labels is not None
            if self.labelled:
                self._labels = open(self._temp / LABELS, "wb")
        if self.labelled != (labels is not None):
            raise ValueError("labels must be given with every append or with none")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
                )
            if len(labels) and (labels.min() < 0 or (self.class_names and labels.max() >= len(self.class_names))):
                raise GenforgeError(f"{self.out}: labels {labels.min()}..{labels.max()} outside the class list")
            data = labels.astype(_LABEL_DTYPE).tobytes()
            self._labels.write(data)
            self._hashes[LABELS].update(data)
        data = np.ascontiguousarray(images).data
        self._images.write(data)
        self._hashes[IMAGES].update(data)
        self.count += len(images)

    def close(self) -> dict:
        """Finish: header last, fsync, rename into place. Returns the summary (count, shape, bytes)."""
        if self.summary is not None:
            return self.summary
        try:
            if self.count == 0:
                raise GenforgeError(f"{self.out}: nothing to pack (no images were given)")
            for handle in (self._images, self._labels):
                if handle is not None:
                    handle.flush()
                    os.fsync(handle.fileno())
                    handle.close()
            self._images = self._labels = None
            height, width, channels = self.image_shape
            header = {
                "format": FORMAT,
                "version": VERSION,
                "count": self.count,
                "height": height,
                "width": width,
                "channels": channels,
                "labelled": bool(self.labelled),
                "class_names": self.class_names if self.labelled else None,
                "source": self.source,
                "packed_with": self.packed_with,
                "checksums": {
                    name: _digest(self._hashes[name]) for name in (IMAGES, LABELS)[: 1 + bool(self.labelled)]
                },
            }
            (self._temp / HEADER).write_text(json.dumps(header, indent=1) + "\n")
            self._temp.chmod(0o755)  # mkdtemp made it private; a dataset is for everyone who can see it
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        size = self.count * height * width * channels
        self.summary = {
            "out": str(self.out),
            "count": self.count,
            "shape": [self.count, height, width, channels],
            "labelled": bool(self.labelled),
            "num_classes": None if not self.labelled or self.class_names is None else len(self.class_names),
            "bytes": size + (self.count * _LABEL_DTYPE.itemsize if self.labelled else 0),
        }
        return self.summary

    def _move_into_place(self) -> None:
        check_replaceable(self.out, self.overwrite)  # again: it may have appeared while we wrote
        if self.out.exists():  # asked to overwrite a packed dataset: the old one goes aside first
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            os.replace(self.out, old / "data")
            os.replace(self._temp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._temp, self.out)

    def abort(self) -> None:
        """Drop everything written so far; ``out`` is untouched."""
        for handle in (self._images, self._labels):
            if handle is not None:
                handle.close()
        self._images = self._labels = None
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, error_type, error, trace) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


def _read_header(folder: Path) -> dict:
    path = folder / HEADER
    if not path.is_file():
        raise GenforgeError(f"{folder}: not a packed dataset (no {HEADER}); pack one with `genforge data pack`")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenforgeError(f"{path}: corrupt header ({error}); pack the dataset again") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise GenforgeError(f"{path}: not a genforge packed dataset (format {found!r}, expected {FORMAT!r})")
    if header.get("version") != VERSION:
        raise GenforgeError(
            f"{path}: packed format version {header.get('version')!r}; this genforge reads version {VERSION}"
        )
    for key, low in (("count", 1), ("height", 1), ("width", 1), ("channels", 1)):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GenforgeError(f"{path}: corrupt header: '{key}' is {value!r}, expected a positive integer")
    if header["channels"] not in (1, 3):
        raise GenforgeError(f"{path}: corrupt header: 'channels' is {header['channels']}, expected 1 or 3")
    if not isinstance(header.get("labelled"), bool):
        raise GenforgeError(f"{path}: corrupt header: 'labelled' must be true or false")
    names = header.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise GenforgeError(f"{path}: corrupt header: 'class_names' must be a list of strings or null")
    sums = header.get("checksums", {})  # absent in packs from before checksums
    if not (isinstance(sums, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items())):
        raise GenforgeError(f"{path}: corrupt header: 'checksums' must map file names to checksums")
    return header


def _check_sum(path: Path, expected: str | None, hasher) -> None:
    if expected is not None and _digest(hasher) != expected:
        raise GenforgeError(
            f"{path}: its content does not match the checksum recorded when it was packed (the file was "
            "changed or damaged); pack the dataset again"
        )


def _check_size(path: Path, expected: int, what: str) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise GenforgeError(f"{path}: missing ({what}); pack the dataset again") from None
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise GenforgeError(
            f"{path}: {state}: {size} bytes, the header says {expected} ({what}); pack the dataset again"
        )


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """One positioned read into ``view``. Positioned reads share no file offset, so DataLoader
    workers forked with the same descriptor cannot move each other's reads."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    if hasattr(os, "pread"):  # macOS before 11: one copy more
        data = os.pread(fd, len(view), offset)
    else:  # Windows: workers there are spawned, and each opens its own descriptor (__setstate__)
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


class PackedImages:
    """A packed dataset, opened lazily: the header and labels are read, the images only by take().

    Answers what ImageData answers (len, shape, labels, class_names, num_classes, resolution,
    channels, source, take, chunks), so the training loop can hold either.
    """

    _fd: int | None = None  # class default: close() works even if __init__ failed half-way

    def __init__(self, folder: Path | str):
        self.folder = Path(folder).expanduser()
        header = _read_header(self.folder)
        self.header = header
        self.checksums: dict[str, str] = header.get("checksums", {})
        self.shape = (header["count"], header["height"], header["width"], header["channels"])  # (N, H, W, C)
        self.image_bytes = header["height"] * header["width"] * header["channels"]
        self.nbytes = header["count"] * self.image_bytes
        what = f"{header['count']} images of {header['height']}x{header['width']}x{header['channels']}"
        _check_size(self.folder / IMAGES, self.nbytes, what)
        self.labels = None  # int64 (N,): 8 bytes an image, small enough to hold
        self.class_names = header["class_names"]
        if header["labelled"]:
            _check_size(self.folder / LABELS, header["count"] * _LABEL_DTYPE.itemsize, f"{header['count']} labels")
            raw = (self.folder / LABELS).read_bytes()
            sums = _hasher()
            sums.update(raw)
            _check_sum(self.folder / LABELS, self.checksums.get(LABELS), sums)
            labels = np.frombuffer(raw, _LABEL_DTYPE).astype(np.int64)
            limit = len(self.class_names) if self.class_names is not None else None
            if labels.min() < 0 or (limit is not None and labels.max() >= limit):
                raise GenforgeError(
                    f"{self.folder / LABELS}: labels {labels.min()}..{labels.max()} do not fit the header's "
                    f"{limit} class names; pack the dataset again"
                )
            self.labels = labels
        self.source = f"{self.folder} (packed from {header.get('source') or 'unknown'})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def resolution(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[3]

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None:
            return int(self.labels.max()) + 1
        return None

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.folder / IMAGES, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fd

    def _read_runs(self, out: np.ndarray, runs: list[tuple[int, int, int]]) -> None:
        """Fill ``out`` (n, H, W, C), contiguous, from runs of (position in out, first image, count)."""
        fd, size = self._descriptor(), self.image_bytes
        view = memoryview(out).cast("B")
        for position, first, count in runs:
            at, end, offset = position * size, (position + count) * size, first * size
            while at < end:
                got = _read_at(fd, view[at:end], offset)
                if got == 0:
                    raise GenforgeError(f"{self.folder / IMAGES}: ended early (the file shrank after it was opened)")
                at, offset = at + got, offset + got

    def read(self, start: int, stop: int) -> np.ndarray:
        """uint8 (stop - start, H, W, C): consecutive images, in one read."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"images {start}..{stop} are out of range for {len(self)} packed images")
        out = np.empty((stop - start, *self.shape[1:]), np.uint8)
        self._read_runs(out, [(0, start, stop - start)])
        return out

    def take(self, indices) -> np.ndarray:
        """uint8 (n, H, W, C): the images at ``indices`` (any order, repeats allowed), read from disk.

        Reads go in file order (kind to the disk's read-ahead), each straight into its place in
        the result; neighbours in both file and result share one read, and a repeat is read once."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            bad = index[(index < 0) | (index >= len(self))][0]
            raise IndexError(f"index {bad} is out of range for {len(self)} packed images")
        out = np.empty((len(index), *self.shape[1:]), np.uint8)
        if len(index) == 0:
            return out
        order = np.argsort(index, kind="stable")  # result positions, by image
        images = index[order]
        first = np.r_[True, images[1:] != images[:-1]]  # first request of each image
        positions, wanted = order[first], images[first]
        joined = (np.diff(wanted) == 1) & (np.diff(positions) == 1)
        bounds = np.r_[0, np.flatnonzero(~joined) + 1, len(wanted)]
        starts = bounds[:-1]
        self._read_runs(out, list(zip(positions[starts].tolist(), wanted[starts].tolist(), np.diff(bounds).tolist())))
        if not first.all():  # repeats: copy from the image's first place
            out[order[~first]] = out[positions[np.cumsum(first) - 1][~first]]
        return out

    def chunks(self, max_bytes: int | None = None, stop: int | None = None) -> Iterator[np.ndarray]:
        """The first ``stop`` images (all by default) in order, as arrays of at most ``max_bytes``
        (CHUNK_BYTES by default; one image at least). A pass over every image checks the images'
        checksum at its end: a damaged file raises there, after its last chunk."""
        stop = len(self) if stop is None else min(stop, len(self))
        step = max(1, (max_bytes or CHUNK_BYTES) // self.image_bytes)
        sums = _hasher() if stop == len(self) else None
        for start in range(0, stop, step):
            part = self.read(start, min(start + step, stop))
            if sums is not None:
                sums.update(part.data)
            yield part
        if sums is not None:
            _check_sum(self.folder / IMAGES, self.checksums.get(IMAGES), sums)

    def verify(self) -> bool:
        """Read every image and check the images' checksum (an error if it does not match); False
        when the pack has no checksum to check (packed before they existed)."""
        for _ in self.chunks():
            pass
        return IMAGES in self.checksums

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:  # for spawned DataLoader workers: they open their own descriptor
        return {**self.__dict__, "_fd": None}

    def __repr__(self) -> str:
        return f"PackedImages({str(self.folder)!r}, shape={self.shape})"


def rank_indices(count: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """int64: this rank's share of 0 .. count - 1, every world_size-th index from ``rank``. The
    shares are disjoint, cover everything and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return np.arange(rank, count, world_size, dtype=np.int64)


def draw_batch(count: int, batch_size: int, *, seed: int, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """int64 (batch_size,): indices of one batch, uniform with replacement from this rank's share,
    a pure function of (seed, step, rank): a resumed run draws the same batches with no sampler
    state to save, and the ranks never draw the same image in a step."""
    share = rank_indices(count, rank, world_size)
    if len(share) == 0:
        raise GenforgeError(f"{count} images cannot be shared among {world_size} ranks; use fewer ranks")
    rng = np.random.default_rng([seed, step, rank])
    return share[rng.integers(0, len(share), batch_size)]
