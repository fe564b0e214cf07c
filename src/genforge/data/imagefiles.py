"""Image folders and zips of images; class sub-folders give labels, a flat set none.

A set is listed first (names and labels, no pixels), then decoded file by file. Reading it whole
(``open_image_folder``, ``open_image_zip``) decodes everything into one array; ``pack_dataset``
walks ``ImageFiles`` a chunk at a time, so a folder larger than memory never sits in it whole.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from genforge.data.result import Images, RaggedImages, ReaderResult, check_result
from genforge.errors import GenforgeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # Pillow decodes them all
_GREY_MODES = ("1", "L", "LA")  # plus the 16/32-bit "I" modes; everything else decodes to RGB


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/WebP/TIFF bytes -> uint8 (H, W, 1) for grey, (H, W, 3) for everything
    else; of an animated or multi-page file (WebP, TIFF), the first frame."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so a truncated file fails here with its name
            if image.mode in _GREY_MODES:
                array = np.asarray(image.convert("L"))
            elif image.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits
                wide = np.asarray(image).astype(np.int64)
                if wide.min() < 0 or wide.max() > 65535:
                    raise GenforgeError(f"{name}: 32-bit image values outside 0..65535; save it as 8-bit")
                array = (wide >> 8).astype(np.uint8)
            elif image.mode == "F":
                raise GenforgeError(f"{name}: floating-point images are not supported; save it as 8-bit")
            else:  # RGB, RGBA (alpha dropped, not composited), P (palette), CMYK, ...
                array = np.asarray(image.convert("RGB"))
    except GenforgeError:
        raise
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise GenforgeError(f"{name}: not a readable image ({error}); fix or remove the file") from None
    return array[:, :, None] if array.ndim == 2 else array


def _is_image_name(name: str) -> bool:
    parts = name.split("/")
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)  # macOS/Finder litter
    return not hidden and name.lower().endswith(IMAGE_SUFFIXES)


@dataclass
class ImageFiles:
    """An image folder or zip, listed but not decoded. Use it as a context manager: a zip stays
    open until the block ends."""

    source: str
    names: list[str]  # '/'-separated paths relative to the dataset root, sorted
    labels: np.ndarray | None  # int64 (N,)
    class_names: list[str] | None
    open: Callable[[str], BinaryIO]  # one file's encoded bytes, as a stream
    close: Callable[[], None] = field(default=lambda: None)

    def __len__(self) -> int:
        return len(self.names)

    def read(self, name: str) -> bytes:
        try:
            with self.open(name) as stream:
                return stream.read()
        except (OSError, zipfile.BadZipFile, zlib.error) as error:
            raise GenforgeError(f"{self.source}: {name} cannot be read ({error})") from None

    def decode(self, index: int) -> np.ndarray:
        """uint8 (H, W, C) of image ``index``."""
        return decode_image(self.read(self.names[index]), self.names[index])

    def colour(self) -> bool:
        """Whether any image decodes as colour, making the whole set RGB. Reads only headers (PIL
        opens lazily), and stops at the first colour image."""
        for name in self.names:
            try:
                with self.open(name) as stream, Image.open(stream) as image:
                    mode = image.mode
            except Exception as error:  # PIL's many exception types, zip and OS errors
                raise GenforgeError(f"{name}: not a readable image ({error}); fix or remove the file") from None
            if not (mode in _GREY_MODES or mode.startswith("I")):
                return True
        return False

    def __enter__(self) -> ImageFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _labelled(names: list[str], source: str) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels from class sub-folders; the top-level folder is the class, however deep the image."""
    if not names:
        raise GenforgeError(
            f"{source}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, also in sub-folders)"
        )
    in_folder = [len(n.split("/")) > 1 for n in names]
    if any(in_folder) and not all(in_folder):
        top = names[in_folder.index(False)]
        sub = names[in_folder.index(True)]
        raise GenforgeError(
            f"{source}: some images are at the top level (e.g. {top}) and some in class sub-folders "
            f"(e.g. {sub}); put every image in a class sub-folder, or none"
        )
    if not all(in_folder):
        return None, None
    folders = [n.split("/")[0] for n in names]
    class_names = sorted(set(folders))
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[f] for f in folders], np.int64), class_names


def _files_under(folder: str, prefix: str = "") -> Iterator[str]:
    """'/'-separated paths of the files under ``folder``, as ``Path.rglob`` finds them (symbolic
    links to files followed, to folders not), with os.scandir: a tenth of rglob's time, which
    matters on every start of a run over a folder of many thousand images."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _files_under(entry.path, f"{prefix}{entry.name}/")
            elif entry.is_file():
                yield prefix + entry.name


def list_image_folder(folder: Path) -> ImageFiles:
    names = sorted(n for n in _files_under(str(folder)) if _is_image_name(n))
    labels, class_names = _labelled(names, str(folder))
    return ImageFiles(str(folder), names, labels, class_names, lambda n: (folder / n).open("rb"))


def list_image_zip(path: Path) -> ImageFiles:
    """Read in place. Wrapping folders that hold everything are skipped, so ``zip -r data.zip
    data/`` reads like the folder ``data`` (a zip of one class: no labels)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise GenforgeError(f"{path}: not a readable zip archive ({error})") from None
    members = sorted(i.filename for i in archive.infolist() if not i.is_dir() and _is_image_name(i.filename))
    parts = [m.split("/") for m in members]
    depth = 0
    while parts and all(len(p) > depth + 1 and p[depth] == parts[0][depth] for p in parts):
        depth += 1
    by_name = {"/".join(p[depth:]): m for p, m in zip(parts, members)}
    try:
        labels, class_names = _labelled(sorted(by_name), str(path))
    except GenforgeError:
        archive.close()
        raise
    return ImageFiles(
        str(path), sorted(by_name), labels, class_names, lambda n: archive.open(by_name[n]), archive.close
    )


def list_image_files(path: Path) -> ImageFiles:
    """A folder or a .zip of images, listed."""
    return list_image_folder(path) if path.is_dir() else list_image_zip(path)


def same_channels(pictures: list[np.ndarray], colour: bool) -> list[np.ndarray]:
    """One channel count for the set: grey joins RGB when any image is colour."""
    return [np.repeat(p, 3, axis=2) if colour and p.shape[2] == 1 else p for p in pictures]


def stack(pictures: list[np.ndarray], names: list[str]) -> Images:
    """uint8 (N, H, W, C) when all sizes agree, else RaggedImages for transforms.fit_images."""
    return np.stack(pictures) if len({p.shape for p in pictures}) == 1 else RaggedImages(pictures, names)


def decode_all(files: ImageFiles, limit: int | None = None) -> ReaderResult:
    """Every image (the first ``limit``) decoded into memory."""
    count = len(files) if limit is None else min(limit, len(files))  # labels come first: ids never depend on limit
    pictures = [files.decode(i) for i in range(count)]
    pictures = same_channels(pictures, any(p.shape[2] == 3 for p in pictures))
    labels = None if files.labels is None else files.labels[:count]
    return check_result(stack(pictures, files.names[:count]), labels, files.class_names)


def open_image_folder(folder: Path, limit: int | None = None) -> ReaderResult:
    """A folder of images; class sub-folders (sorted by name) give labels, a flat folder none."""
    return decode_all(list_image_folder(folder), limit)


def open_image_zip(path: Path, limit: int | None = None) -> ReaderResult:
    """A zip of images, read in place."""
    with list_image_zip(path) as files:
        return decode_all(files, limit)
