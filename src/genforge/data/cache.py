"""The folder cache: an image folder or zip is decoded once, into a packed dataset (packed.py)
under genforge's cache root, and read from there on every later start, resume and evaluation.

    <cache root>/folders/<name>-<path hash>_<split>_<size>_<fit>_c<channels>[_l<limit>].<fingerprint>/

The fingerprint hashes the folder's absolute path, the names, sizes and modification times of
the files used, the class names, and the resolution, fit and channels asked for: touching,
adding, removing or renaming an image gives another fingerprint, so the next load decodes the
folder again (and removes the superseded cache of the same request). A zip is fingerprinted by
its own size and modification time and its member names.

The cache is written by PackWriter, into a hidden temporary folder renamed into place at the
end, so a killed build leaves no half cache (at most a ``.*.partial`` folder that is never read).
Delete ``<cache root>/folders`` to clear it; ``$GENFORGE_CACHE`` moves the cache root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

from genforge.data.imagefiles import ImageFiles, list_image_files
from genforge.data.pack import pack_files
from genforge.data.packed import PackedImages, is_packed
from genforge.data.readers import require_whole
from genforge.data.transforms import fit_images
from genforge.errors import GenforgeError
from genforge.paths import cache_root
from genforge.progress import SILENT, Reporter

CACHE_DIR = "folders"
VERSION = 1  # part of the fingerprint: raise it when the same files would be decoded differently


def folder_cache_dir() -> Path:
    return cache_root() / CACHE_DIR


def cached_images(
    path: Path,
    split: str,
    resolution: int | None,
    fit: str,
    channels: int | None,
    limit: int | None = None,
    reporter: Reporter = SILENT,
) -> PackedImages:
    """The first ``limit`` images (all by default) of the image folder or zip ``path``, fitted and
    converted as asked, as a handle on their cache; built first if the files changed or it is
    missing (a bar and a closing line on ``reporter``). The handle's ``source`` is ``path``, not the cache."""
    require_whole(path, split)
    # fit 'none' keeps the pixels as they are, whatever resolution is asked (it is only checked):
    # one cache serves both, e.g. `genforge data info` and a run at the folder's own size
    stored = None if fit == "none" else resolution
    options = {"split": split, "resolution": stored, "fit": fit, "channels": channels}
    with list_image_files(path) as files:
        if limit is not None and limit >= len(files):
            limit = None  # all of them: the same cache as without a limit (evaluation asks for n)
        count = len(files) if limit is None else limit
        used = replace(files, names=files.names[:count], labels=None if files.labels is None else files.labels[:count])
        digest = fingerprint(path, used, options)
        prefix = _request_name(path, options, limit)
        folder = folder_cache_dir() / f"{prefix}.{digest[:20]}"
        packed = _open(folder)
        if packed is None:
            packed = _build(used, folder, {**options, "limit": limit, "fingerprint": digest}, path, reporter)
            for stale in folder.parent.glob(f"{prefix}.*"):  # this request's caches of older files
                if stale != folder and stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
    if fit == "none" and resolution is not None:
        fit_images(packed.read(0, 1), resolution, fit)  # the same error as a direct decode when the size differs
    packed.source = str(path)
    return packed


def fingerprint(path: Path, files: ImageFiles, options: dict) -> str:
    """sha256 (hex) of what the cache's pixels depend on; stats files, never reads them."""
    digest = hashlib.sha256()
    head = {"version": VERSION, "path": str(path.resolve()), "options": options, "classes": files.class_names}
    digest.update(json.dumps(head, sort_keys=True).encode())
    if path.is_dir():
        root = str(path)
        for name in files.names:
            stat = os.stat(os.path.join(root, name))
            digest.update(f"\n{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    else:  # a zip: its members change only with the archive
        stat = path.stat()
        digest.update(f"\nzip\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        digest.update("\0".join(files.names).encode())
    return digest.hexdigest()


def _request_name(path: Path, options: dict, limit: int | None) -> str:
    resolved = path.resolve()
    base = re.sub(r"[^A-Za-z0-9.-]+", "-", resolved.name).strip("-.") or "data"
    where = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    size = options["resolution"] or "native"
    colour = options["channels"] or "native"
    return f"{base}-{where}_{options['split']}_{size}_{options['fit']}_c{colour}" + (f"_l{limit}" if limit else "")


def _open(folder: Path) -> PackedImages | None:
    """The cache at ``folder``, or None when it is missing or unreadable (then it is rebuilt)."""
    if not is_packed(folder):
        return None
    try:
        return PackedImages(folder)
    except GenforgeError:  # damaged by hand or by a full disk: decode again
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _build(files: ImageFiles, folder: Path, options: dict, path: Path, reporter: Reporter) -> PackedImages:
    bar = reporter.progress(total=len(files), desc=f"decoding {path} once (cache)", unit="image")
    try:
        pack_files(files, folder, options, source=str(path), progress=lambda done, _: bar.update(done - bar.n))
    except (GenforgeError, OSError):  # OSError: the rename lost a race to another writer
        if not is_packed(folder):
            bar.enabled = False  # no closing line: a bad file is one error line
            raise
        # another process (a rank of the same torchrun job) finished the same cache first
    except BaseException:
        bar.enabled = False
        raise
    finally:
        bar.close()
    reporter.say(f"data: cached in {folder}")
    packed = _open(folder)
    assert packed is not None, f"{folder}: written but unreadable"
    return packed
