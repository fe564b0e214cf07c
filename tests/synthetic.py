"""Shared by the end-to-end tests: synthetic labelled data, a tiny cached evaluator, tiny runs.

Class k of the synthetic images is a bright horizontal bar at row ``4 + 6k`` on dim noise, so a
classifier learns the classes in one short epoch and a few training steps change the pictures.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import struct
from pathlib import Path

import numpy as np

from genforge.cli import main
from genforge.data import dataset_key, load_dataset
from genforge.metrics.classifier import save_classifier, train_classifier
from genforge.runfolder import read_records

NUM_CLASSES = 4
# Every run: CPU, fp32 (bf16 autocast only slows tiny tensors down), small grids, no periodic samples.
COMMON = [
    "train.batch_size=16",
    "train.sample_every=0",
    "train.grid_images=8",
    "train.precision=fp32",
    "train.log_every=5",
]
TINY_GAN = ["model.g_width=8", "model.d_width=8"]
TINY_VQVAE = ["model.width=8", "model.latent_dim=8", "model.quantizer.num_codes=16"]
TINY_PRIOR = ["model.n_layer=1", "model.n_embd=16", "model.n_head=2"]


def bar_images(labels: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (N, size, size, 1): class k is a bar at row 4 + 6k over noise in 0..39."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (len(labels), size, size, 1), dtype=np.uint8)
    for i, k in enumerate(labels):
        row = 4 + 6 * int(k)
        images[i, row : row + 3, 3 : size - 3, 0] = rng.integers(180, 256)
    return images


def balanced_labels(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % NUM_CLASSES


def write_npz(path: Path, n: int = 256, size: int = 32, labelled: bool = True, seed: int = 0) -> Path:
    labels = balanced_labels(n)
    arrays = {"images": bar_images(labels, size, seed)}
    if labelled:
        arrays["labels"] = labels
    np.savez(path, **arrays)
    return path


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), compresslevel=1))


def write_idx_folder(folder: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """An MNIST-style folder (28x28, labels, train and t10k splits): data with a test split."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = balanced_labels(n)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", bar_images(labels, 28, seed)[..., 0])
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder


def install_evaluator(cache: Path, source: str, limit: int | None = None, seed: int = 0) -> Path:
    """Train a tiny classifier on ``source`` and cache it where evaluation looks for the dataset's
    evaluator, so no test ever trains the full one."""
    key = dataset_key(source, "train", None, "none", None)
    data = load_dataset(source, split="train", limit=limit)
    model, accuracy = train_classifier(
        data.images, data.labels, data.images, data.labels, epochs=1, batch_size=64, seed=seed
    )
    return save_classifier(model, Path(cache) / "evaluators" / key, test_accuracy=accuracy, dataset_key=key)


def sets(*groups: list[str]) -> list[str]:
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for group in groups for value in group for arg in ("--set", value)]


def cli(*args) -> tuple[int, str, str]:
    """Run ``genforge ARGS``; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_error(err: str) -> str:
    """The error of a command that printed nothing else: exactly one 'genforge: error:' line."""
    assert err.startswith("genforge: error: ") and err.count("\n") == 1, err
    return err.strip()


def train(
    family: str,
    out: Path,
    *,
    data: Path | str | None = None,
    vqvae: Path | None = None,
    steps: int = 6,
    extra: list[str] = (),
    options: list[str] = (),
) -> Path:
    """A tiny CLI training run; fails the test unless it exits 0."""
    tiny = {"gan": TINY_GAN, "vqvae": TINY_VQVAE, "prior": TINY_PRIOR}[family]
    args = [
        "train",
        family,
        "--out",
        out,
        "--steps",
        steps,
        "--device",
        "cpu",
        "--quiet",
        *sets(COMMON, tiny, list(extra)),
        *options,
    ]
    if data is not None:
        args += ["--data", data]
    if vqvae is not None:
        args += ["--vqvae", vqvae]
    code, _, err = cli(*args)
    assert code == 0, err
    return Path(out)


def records(run: Path, type: str | None = None) -> list[dict]:
    """metrics.jsonl records (``{"type", "step", "time", "values"}``); with ``type`` only those of it
    ("train", "eval", "evaluation")."""
    return [r for r in read_records(Path(run)) if type is None or r["type"] == type]


def error_line(err: str) -> str:
    """The one line an error leaves on stderr (tqdm bars may precede it when progress is on)."""
    lines = [line for line in err.splitlines() if line.startswith("genforge: error:")]
    assert len(lines) == 1, err
    return lines[0]


def is_png(path: Path) -> bool:
    return Path(path).is_file() and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def respec(spec, **changes):
    """A copy of a family (a FamilySpec instance) with some of its attributes or methods replaced."""
    changed = copy.copy(spec)
    for name, value in changes.items():
        setattr(changed, name, value)
    return changed
