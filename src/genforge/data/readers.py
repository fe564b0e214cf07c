"""One small reader per data format, each returning (images, labels, class_names) as
``result.check_result`` asserts; image folders and zips live in ``imagefiles``.
Model: stylegan2-ada ``dataset_tool.py`` (open_mnist, open_cifar10, open_image_folder).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genforge.data.imagefiles import IMAGE_SUFFIXES, open_image_folder, open_image_zip
from genforge.data.result import ReaderResult, as_labels, check_result
from genforge.errors import GenforgeError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


# ---------------------------------------------------------------- IDX (MNIST family)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # gzip magic; raw IDX files start with two zero bytes
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise GenforgeError(f"{path}: corrupt or truncated gzip data ({error}); re-download it") from None


def is_idx(path: Path) -> bool:
    """Sniff the magic number: 0x00 0x00, a known type code, 1..4 dimensions."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
        with gzip.open(path, "rb") if head == b"\x1f\x8b" else path.open("rb") as f:
            magic = f.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(magic) == 4 and magic[:2] == b"\0\0" and magic[2] in _IDX_DTYPES and 1 <= magic[3] <= 4


def read_idx(path: Path) -> np.ndarray:
    """An IDX file -> its array, shape from the header. Errors name the file and what is wrong."""
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        magic = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
        raise GenforgeError(
            f"{path}: not an IDX file (bad magic number 0x{magic:08x}; expected 0x00000803 for images, 0x00000801 for labels)"
        )
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise GenforgeError(f"{path}: truncated IDX file (header cut short); re-download it")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    need = math.prod(dims) * dtype.itemsize
    if len(data) - header < need:
        raise GenforgeError(
            f"{path}: truncated IDX file: header says {dims[0]} items of shape {tuple(dims[1:])} ({need} bytes) "
            f"but only {len(data) - header} bytes follow; re-download it"
        )
    # copy: frombuffer over bytes is read-only, and torch.from_numpy wants a writable array
    return (
        np.frombuffer(data, dtype, count=math.prod(dims), offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def open_idx_images(path: Path) -> np.ndarray:
    """IDX images, (N, H, W) or (N, H, W, C) uint8 -> (N, H, W, C)."""
    array = read_idx(path)
    if array.ndim == 1:
        raise GenforgeError(f"{path}: is an IDX label file, not images; pass the images file or its folder")
    if array.dtype != np.uint8 or not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3))):
        raise GenforgeError(f"{path}: IDX images must be uint8 (N, H, W), got {array.dtype} of shape {array.shape}")
    return array[..., None] if array.ndim == 3 else array


def open_idx_labels(path: Path, count: int, images_path: Path) -> np.ndarray:
    labels = read_idx(path)
    if labels.ndim != 1:
        raise GenforgeError(f"{path}: expected an IDX label file (1 dimension), got shape {labels.shape}")
    if len(labels) != count:
        raise GenforgeError(
            f"{path}: holds {len(labels)} labels but {images_path.name} holds {count} images; both files must come from the same set"
        )
    return as_labels(labels, str(path))


def _idx_file(folder: Path, prefix: str, content: str) -> Path | None:
    """MNIST files are named train-images-idx3-ubyte, with '.' for '-' on some mirrors, maybe .gz."""
    dims = "idx3" if content == "images" else "idx1"
    for sep in ("-", "."):
        for suffix in (".gz", ""):
            candidate = folder / f"{prefix}-{content}{sep}{dims}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def is_idx_folder(folder: Path) -> bool:
    return any(_idx_file(folder, prefix, "images") for prefix in ("train", "t10k"))


def open_mnist(folder: Path, split: str, class_names: list[str] | None = None) -> ReaderResult:
    """A folder of MNIST-family IDX files; split 'train' (train-*), 'test' (t10k-*) or 'all'."""
    parts, labels = [], []
    for prefix in {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]:
        images_path = _idx_file(folder, prefix, "images")
        if images_path is None:
            raise GenforgeError(f"{folder}: no {prefix}-images-idx3-ubyte[.gz] file, needed for split '{split}'")
        parts.append(open_idx_images(images_path))
        labels_path = _idx_file(folder, prefix, "labels")
        labels.append(None if labels_path is None else open_idx_labels(labels_path, len(parts[-1]), images_path))
    if len({p.shape[1:] for p in parts}) > 1:
        raise GenforgeError(
            f"{folder}: train and test images differ in shape ({parts[0].shape[1:]} vs {parts[1].shape[1:]})"
        )
    images = parts[0] if len(parts) == 1 else np.concatenate(parts)
    all_labels = None if any(l is None for l in labels) else np.concatenate(labels)
    return check_result(images, all_labels, class_names if all_labels is not None else None)


def open_idx_file(path: Path) -> ReaderResult:
    """A single images IDX file; labels from the sibling *-labels-idx1-ubyte[.gz] when present."""
    images = open_idx_images(path)
    sibling = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
    labels = open_idx_labels(sibling, len(images), path) if sibling != path and sibling.is_file() else None
    return check_result(images, labels, None)


# ---------------------------------------------------------------- CIFAR-10/100 python pickles

# CIFAR batches are pickles by format, and pickles can run code. Only the callables that
# rebuild a numpy array (plus bytes from a str) are allowed; each is free of side effects and
# an object array's elements would need further globals, which are refused.
_ARRAY_REBUILDERS = {
    "_reconstruct": np.zeros(1).__reduce__()[0],  # numpy(._)core.multiarray._reconstruct
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],  # pickle protocol 5 arrays
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_REBUILDERS["_reconstruct"],
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_REBUILDERS["_reconstruct"],
    ("numpy.core.numeric", "_frombuffer"): _ARRAY_REBUILDERS["_frombuffer"],
    ("numpy._core.numeric", "_frombuffer"): _ARRAY_REBUILDERS["_frombuffer"],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,  # how protocol 2 writes bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def _unpickle_batch(data: bytes, name: str) -> dict:
    try:
        # latin1: the real batches were written by Python 2; numpy decodes their array bytes
        batch = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise GenforgeError(
            f"{name}: refusing to unpickle it ({error}); CIFAR batches hold only arrays and lists"
        ) from None
    except Exception as error:  # EOFError, ValueError, ... from a damaged file
        raise GenforgeError(f"{name}: not a readable CIFAR batch ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict):
        raise GenforgeError(f"{name}: not a CIFAR batch (holds {type(batch).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _is_cifar_name(base: str) -> bool:
    return base in ("test_batch", "batches.meta", "train", "test", "meta") or base.startswith("data_batch_")


def cifar_version(basenames: set[str]) -> str | None:
    """'cifar10', 'cifar100' or None from the file names of a folder or archive."""
    if "data_batch_1" in basenames or ("test_batch" in basenames and "batches.meta" in basenames):
        return "cifar10"
    if "meta" in basenames and ("train" in basenames or "test" in basenames):
        return "cifar100"
    return None


def open_cifar(files: dict[str, Callable[[], bytes]], source: str, split: str) -> ReaderResult:
    """CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta),
    ``files`` mapping base names to readers. Rows are 3072 bytes: 1024 R, then G, then B."""
    version = cifar_version(set(files))
    assert version is not None
    if version == "cifar10":
        train = sorted((n for n in files if n.startswith("data_batch_")), key=lambda n: int(n.rsplit("_", 1)[1]))
        test, meta_name, labels_key, names_key = ["test_batch"], "batches.meta", "labels", "label_names"
    else:
        train, test, meta_name, labels_key, names_key = ["train"], ["test"], "meta", "fine_labels", "fine_label_names"
    wanted = {"train": train, "test": test, "all": train + test}[split]
    missing = [n for n in wanted + [meta_name] if n not in files]
    if missing:
        raise GenforgeError(f"{source}: CIFAR files missing: {', '.join(missing)} (needed for split '{split}')")
    images, labels = [], []
    for name in wanted:
        batch = _unpickle_batch(files[name](), f"{source}/{name}")
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise GenforgeError(
                f"{source}/{name}: 'data' must be a uint8 (N, 3072) array, got {type(data).__name__} {shape}"
            )
        if labels_key not in batch:
            raise GenforgeError(f"{source}/{name}: no '{labels_key}' entry; is this a CIFAR-{version[5:]} batch?")
        batch_labels = as_labels(batch[labels_key], f"{source}/{name}")
        if len(batch_labels) != len(data):
            raise GenforgeError(f"{source}/{name}: holds {len(batch_labels)} labels for {len(data)} images")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels.append(batch_labels)
    meta = _unpickle_batch(files[meta_name](), f"{source}/{meta_name}")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    all_labels = np.concatenate(labels)
    if len(all_labels) and (not class_names or all_labels.max() >= len(class_names)):
        raise GenforgeError(
            f"{source}/{meta_name}: '{names_key}' lists {len(class_names)} classes but labels reach {all_labels.max()}"
        )
    return check_result(np.ascontiguousarray(np.concatenate(images)), all_labels, class_names)


def open_cifar_folder(folder: Path, split: str) -> ReaderResult:
    files = {p.name: p.read_bytes for p in folder.iterdir() if p.is_file()}
    return open_cifar(files, str(folder), split)


def open_cifar_archive(path: Path, split: str) -> ReaderResult:
    """The CIFAR .tar.gz as downloaded, read in one pass without extracting anything to disk."""
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:  # sequential: seeking back in a gzip stream re-decompresses
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and _is_cifar_name(base):
                    contents[base] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise GenforgeError(f"{path}: not a readable tar archive ({error})") from None
    names = set(contents)
    if cifar_version(names) is None:
        raise GenforgeError(
            f"{path}: not a CIFAR archive (no data_batch_1/test_batch or train/meta inside); tar archives are read only as CIFAR, use a folder or a .zip for images"
        )
    return open_cifar({n: (lambda n=n: contents[n]) for n in names}, str(path), split)


# ---------------------------------------------------------------- .npz arrays


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """uint8 as is; other integers must lie in 0..255; floats: values in [0, 1] map by
    round(x * 255), otherwise values in [-1, 1] map by round((x + 1) * 127.5); others are errors."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise GenforgeError(f"{name}: integer images must lie in 0..255, found {array.min()}..{array.max()}")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise GenforgeError(f"{name}: images contain NaN or infinite values")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low >= 0 and high <= 1:
            return np.rint(array * 255).astype(np.uint8)
        if low >= -1 and high <= 1:
            return np.rint((array + 1) * 127.5).astype(np.uint8)
        raise GenforgeError(f"{name}: float images must lie in [0, 1] or [-1, 1], found {low:g}..{high:g}")
    raise GenforgeError(f"{name}: unsupported image dtype {array.dtype}; use uint8 or float")


def open_npz(path: Path) -> ReaderResult:
    """Keys 'images' | 'x' | 'arr_0', labels 'labels' | 'y' | 'arr_1' (with arr_0), optional
    'class_names'. Layouts (N, H, W), (N, H, W, C) and (N, C, H, W) with C in {1, 3}."""
    try:
        archive = np.load(path, allow_pickle=False)  # no pickles: object arrays are refused
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise GenforgeError(f"{path}: not a readable .npz file ({error})") from None
    with archive:
        keys = set(archive.files)
        image_key = next((k for k in ("images", "x", "arr_0") if k in keys), None)
        if image_key is None:
            raise GenforgeError(
                f"{path}: no images array; expected a key 'images', 'x' or 'arr_0', found {sorted(keys)}"
            )
        label_keys = ("labels", "y", "arr_1") if image_key == "arr_0" else ("labels", "y")
        label_key = next((k for k in label_keys if k in keys), None)
        try:
            array = archive[image_key]
            labels = None if label_key is None else archive[label_key]
            class_names = [str(n) for n in archive["class_names"]] if "class_names" in keys else None
        except (ValueError, OSError, zipfile.BadZipFile, zlib.error) as error:
            raise GenforgeError(f"{path}: cannot read its arrays ({error})") from None
    if array.ndim == 3:
        array = array[..., None]  # (N, H, W) -> (N, H, W, 1)
    elif array.ndim == 4 and array.shape[3] not in (1, 3) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if array.ndim != 4 or array.shape[3] not in (1, 3):
        raise GenforgeError(
            f"{path}: '{image_key}' has shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"
        )
    images = np.ascontiguousarray(_to_uint8(array, f"{path}: '{image_key}'"))
    if labels is not None:
        labels = as_labels(labels, f"{path}: '{label_key}'")
        if len(labels) != len(images):
            raise GenforgeError(
                f"{path}: '{label_key}' holds {len(labels)} labels but '{image_key}' holds {len(images)} images"
            )
        if class_names is not None and len(labels) and labels.max() >= len(class_names):
            raise GenforgeError(
                f"{path}: labels reach {labels.max()} but 'class_names' lists {len(class_names)} classes"
            )
    return check_result(images, labels, class_names if labels is not None else None)


# ---------------------------------------------------------------- dispatch on a path


def _file_names(folder: Path) -> set[str]:
    """Names of the files directly in ``folder``; os.scandir stats none of them (d_type), which
    counts on every start in a folder of many thousand images."""
    with os.scandir(folder) as entries:
        return {entry.name for entry in entries if entry.is_file()}


def is_image_files(path: Path) -> bool:
    """Whether ``read_path`` reads ``path`` as an image folder or zip, the formats that can be
    decoded one file at a time (pack_dataset streams them)."""
    if path.is_dir():
        return cifar_version(_file_names(path)) is None and not is_idx_folder(path)
    return path.name.lower().endswith(".zip")


def read_path(path: Path, split: str, limit: int | None = None) -> ReaderResult:
    """Pick the reader from what ``path`` is. ``limit`` is honoured early where it saves decoding."""
    if not path.exists():
        raise GenforgeError(f"{path}: no such file or folder")
    name = path.name.lower()
    if is_image_files(path):
        require_whole(path, split)
        return open_image_folder(path, limit) if path.is_dir() else open_image_zip(path, limit)
    if path.is_dir():  # not images, so CIFAR or IDX
        if cifar_version(_file_names(path)) is not None:
            return open_cifar_folder(path, split)
        return open_mnist(path, split)
    if name.endswith(ARCHIVE_SUFFIXES):
        return open_cifar_archive(path, split)
    if name.endswith(".npz"):
        require_whole(path, split)
        return open_npz(path)
    if is_idx(path) or "idx" in name or "ubyte" in name:  # named like IDX: let the reader say what is wrong
        require_whole(path, split)
        return open_idx_file(path)
    if name.endswith(IMAGE_SUFFIXES):
        raise GenforgeError(f"{path}: a single image is not a dataset; pass the folder that holds it")
    raise GenforgeError(
        f"{path}: unknown data format; expected an image folder, a .zip of images, IDX files (MNIST family, "
        f".gz or raw), a CIFAR python folder or .tar.gz, or an .npz"
    )


def require_whole(path: Path, split: str) -> None:
    """Single-split sources: 'train' and 'all' are everything; asking for 'test' is an error."""
    if split == "test":
        raise GenforgeError(
            f"{path}: has no test split (only IDX folders, CIFAR and named datasets have one); use split 'train' or 'all'"
        )
