"""Reading a run folder for a report: what it already holds, without building a model.

Config, the newest checkpoint's metadata and tensor shapes (from the safetensors header alone),
the records of ``metrics.jsonl`` and the sample grids. Nothing here unpickles or runs code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from safetensors import SafetensorError, safe_open

from genforge import checkpoint
from genforge.errors import GenforgeError
from genforge.metrics.table import after_training, find
from genforge.runfolder import CHECKPOINTS, CONFIG, RunFolder, read_records

TRAIN_SPEED_LOGS = 5  # training images/s = mean over this many of the last logs


@dataclass
class RunSummary:
    path: Path
    name: str
    kind: str  # the family ("gan", "stylegan2", "fastgan", "vqvae", "prior", ...) or "unknown"
    step: int
    wall_seconds: float | None
    parameters: dict[str, int]  # module name -> parameter count ("G", "D", "vqvae", "prior", ...)
    config: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)  # training logs, in file order
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", **scores} during training
    evaluation: dict[str, Any] | None = None  # the latest `genforge evaluate` result
    samples: Path | None = None
    recon: Path | None = None
    classes: Path | None = None  # samples/classes.png of a class-conditional model: a row per class
    problems: list[str] = field(default_factory=list)  # things skipped while reading

    @property
    def total_parameters(self) -> int | None:
        return sum(self.parameters.values()) if self.parameters else None

    @property
    def train_images_per_s(self) -> float | None:
        speeds = [r["images_per_s"] for r in self.logs if is_number(r.get("images_per_s"))][-TRAIN_SPEED_LOGS:]
        return sum(speeds) / len(speeds) if speeds else None

    def score(self, key: str) -> float | None:
        """A final-evaluation number, else the newest in-training evaluation's (a prior's held-out
        code loss is recorded at the end of training). Older runs' names are read too."""
        metric = find(key)
        recorded_by_training = key in after_training()
        for name in (key, *(metric.old_names if metric is not None else ())):
            if self.evaluation is not None and is_number(self.evaluation.get(name)):
                return float(self.evaluation[name])
            if recorded_by_training:
                for entry in reversed(self.evals):
                    if is_number(entry.get(name)):
                        return float(entry[name])
        return None


# ---------------------------------------------------------------------------------------------
# Reading a run folder


def collect(run: str | Path, data: str | None = None) -> RunSummary:
    """Read one run folder. With ``data``, only evaluations made on that data set count."""
    path = Path(run)
    if not path.exists():
        raise GenforgeError(f"{path}: no such run folder")
    holder = RunFolder.of_checkpoint(path)
    if (path / checkpoint.META).is_file() and holder is not None:
        path = holder.root  # a checkpoint folder was given: report its run
    folder = RunFolder(path)
    if not path.is_dir() or not folder.is_run():
        raise GenforgeError(f"{path}: not a genforge run folder (no {CONFIG} and no {CHECKPOINTS}/)")
    problems: list[str] = []
    config = _read_config(folder.config, problems)
    meta, tensors = _newest_checkpoint(path, problems)
    if not config and isinstance(meta.get("config"), dict):
        config = meta["config"]
    logs, evals, evaluation = _split_records(read_records(path, problems), data)
    state = meta.get("state") if isinstance(meta.get("state"), dict) else {}
    wall = state.get("elapsed")
    if not is_number(wall):
        times = [r["time"] for r in logs + evals if is_number(r.get("time"))]
        wall = max(times) if times else None
    step = meta.get("step")
    if not isinstance(step, int):
        steps = [r["step"] for r in logs + evals if isinstance(r.get("step"), int)]
        step = max(steps) if steps else 0
    grids = folder.grids()
    samples = folder.final_grid if folder.final_grid.is_file() else (grids[-1] if grids else None)
    recon = next((p for p in folder.recon_grids if p.is_file()), None)
    return RunSummary(
        path=path,
        name=path.resolve().name,
        kind=str(meta.get("kind") or "unknown"),
        step=step,
        wall_seconds=float(wall) if wall is not None else None,
        parameters=_count_parameters(tensors, problems) if tensors else {},
        config=config,
        logs=logs,
        evals=evals,
        evaluation=evaluation,
        samples=samples,
        recon=recon,
        classes=folder.class_grid if folder.class_grid.is_file() else None,
        problems=problems,
    )


def _read_config(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        problems.append(f"{path.name} is not valid YAML")
        return {}
    return config if isinstance(config, dict) else {}


def _newest_checkpoint(run: Path, problems: list[str]) -> tuple[dict[str, Any], Path | None]:
    """(meta.json contents, tensors file) of the newest checkpoint; ({}, None) when there is none."""
    folder = checkpoint.find(run) if RunFolder(run).checkpoints.is_dir() else None
    if folder is None:
        return {}, None
    try:
        meta = json.loads((folder / checkpoint.META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"{folder.name}/{checkpoint.META} is unreadable")
        meta = {}
    tensors = folder / checkpoint.TENSORS
    return (meta if isinstance(meta, dict) else {}), (tensors if tensors.is_file() else None)


def _count_parameters(tensors: Path, problems: list[str]) -> dict[str, int]:
    """Sizes of ``model.<module>.*`` tensors per module, read from the header only.

    The EMA generator is a copy of G, not extra capacity; optimizer moments and RNG state are
    not parameters. A prior's checkpoint holds the prior and the VQ-VAE that decodes its codes.
    """
    counts: dict[str, int] = {}
    try:
        with safe_open(str(tensors), "np") as f:
            for key in f.keys():
                parts = key.split(".")
                if parts[0] != "model" or len(parts) < 3 or parts[1] == "G_ema":
                    continue
                counts[parts[1]] = counts.get(parts[1], 0) + math.prod(f.get_slice(key).get_shape())
    except (SafetensorError, OSError, ValueError) as e:
        problems.append(
            f"{tensors.parent.name}/{tensors.name} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        )
        return {}
    return counts


def _split_records(records: list[dict], data: str | None) -> tuple[list[dict], list[dict], dict | None]:
    """Training logs, in-training evaluations (flattened with their step and time), and the
    latest ``genforge evaluate`` result (on ``data`` only, when given)."""
    logs, evals, evaluation = [], [], None
    for entry in records:
        flat = {"step": entry["step"], **({"time": entry["time"]} if "time" in entry else {}), **entry["values"]}
        if entry["type"] == "train":
            logs.append(flat)
        elif entry["type"] == "eval":
            evals.append(flat)
        elif data is None or entry["values"].get("data") == data:
            evaluation = flat
    return logs, evals, evaluation


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
