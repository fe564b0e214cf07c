"""Checkpoints as plain data: tensors in safetensors, everything else JSON.

Layout of one checkpoint (a folder, written under a temporary name and renamed into place, so
a reader never sees half of one):

    checkpoints/step-0001000/
        tensors.safetensors   model weights, EMA copies, optimizer moments, RNG states
        meta.json             format marker, kind, step, the resolved config, JSON-able state
    checkpoints/latest        the name of the newest complete checkpoint

Nothing here unpickles: a file that is a pickle (``torch.save`` output) is refused by its magic
bytes before any parsing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genforge.errors import GenforgeError
from genforge.runfolder import LATEST, STEP_NAME, TEMPORARY_PREFIX, RunFolder, atomic_write, inside, step_folders

FORMAT = "genforge-checkpoint"
VERSION = 1
TENSORS = "tensors.safetensors"
META = "meta.json"
# torch.save writes a zip archive ("PK") or, in the legacy format, a pickle stream (0x80 + protocol).
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@dataclass
class Checkpoint:
    kind: str  # the family: "gan", "stylegan2", "fastgan", "vqvae", "prior" or another registered one
    step: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path


def save(
    run_dir: Path,
    step: int,
    kind: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``.

    A failed write (disk full, permissions) removes its temporary folder and leaves the previous
    checkpoint and the pointer as they were; it is reported as one GenforgeError line.
    """
    run = RunFolder(run_dir)
    root, final = run.checkpoints, run.checkpoint(step)
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TEMPORARY_PREFIX}-{final.name}-"))
        # safetensors refuses shared or non-contiguous storage; clone to own memory on the CPU.
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(tmp / TENSORS))
        meta = {"format": FORMAT, "version": VERSION, "kind": kind, "step": step, "config": config, "state": state}
        # Plain writes inside the temporary folder: the folder's rename below is what makes the
        # checkpoint appear whole, so its files need no rename of their own.
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        for name in (TENSORS, META):
            _fsync(tmp / name)
        if final.exists():  # the same step saved again (e.g. SIGINT right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        tmp = None
        atomic_write(run.latest, final.name + "\n", sync=True)
    except (OSError, SafetensorError) as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = find(run_dir) if root.is_dir() else None
        kept = f"; the previous checkpoint {previous.name} is intact" if previous is not None else ""
        raise GenforgeError(f"{final}: could not write the checkpoint ({_reason(e)}){kept}") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in step_folders(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def find(path: str | Path) -> Path | None:
    """A run folder, its checkpoints folder or one checkpoint folder -> the checkpoint to load.

    Returns None when a run folder holds no checkpoint yet. The ``latest`` pointer may only name
    a ``step-NNNNNNN`` folder beside it: a run folder is never read outside itself.
    """
    path = Path(path)
    if not path.exists():
        raise GenforgeError(f"{path}: no such run or checkpoint")
    if path.is_file():
        _refuse_pickle(path)
        if path.name == META:
            return path.parent
        raise GenforgeError(f"{path}: not a genforge checkpoint (expected a run folder or a checkpoint folder)")
    if (path / META).exists() or (path / TENSORS).exists():
        return path
    run = RunFolder(path)
    root = run.checkpoints if run.checkpoints.is_dir() else path  # a run folder, or its checkpoints folder
    if not inside(path, root):
        raise GenforgeError(f"{root}: leads outside the run folder {path}; refusing to follow it")
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(errors="replace").strip()
        if not STEP_NAME.fullmatch(name):
            raise GenforgeError(f"{pointer}: names {name[:80]!r}, not a checkpoint folder (step-NNNNNNN) beside it")
        candidate = root / name
        if (candidate / META).is_file():
            if not inside(root, candidate):
                raise GenforgeError(f"{candidate}: leads outside the run folder {path}; refusing to follow it")
            return candidate
    # The pointer is written after the rename; if it was lost, the newest complete folder wins.
    complete = [p for p in step_folders(root) if (p / META).is_file()]
    complete = [p for p in complete if inside(root, p)]
    return complete[-1] if complete else None


def load(
    path: str | Path, kind: str | tuple[str, ...] | None = None, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint, refusing pickles, truncated files and the wrong kind."""
    folder = find(path)
    if folder is None:
        raise GenforgeError(f"{path}: holds no checkpoint yet")
    meta_path, tensors_path = folder / META, folder / TENSORS
    for p in (meta_path, tensors_path):
        if not p.is_file():
            raise GenforgeError(f"{folder}: incomplete checkpoint, {p.name} is missing")
        _refuse_pickle(p)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GenforgeError(f"{meta_path}: corrupt checkpoint metadata (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not {"kind", "step", "config"} <= set(meta):
        raise GenforgeError(f"{meta_path}: not a genforge checkpoint (no '{FORMAT}' marker)")
    if meta.get("version") != VERSION:
        raise GenforgeError(
            f"{meta_path}: checkpoint format version {meta.get('version')} is not supported (expected {VERSION})"
        )
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and meta.get("kind") not in wanted:
        raise GenforgeError(
            f"{folder}: this is a '{meta.get('kind')}' checkpoint, expected {' or '.join(repr(k) for k in wanted)}"
        )
    try:
        tensors = load_file(str(tensors_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenforgeError(f"{tensors_path}: corrupt or truncated tensor file ({str(e).splitlines()[0]})") from None
    return Checkpoint(meta["kind"], int(meta["step"]), meta["config"], tensors, meta.get("state", {}), folder)


# ---------------------------------------------------------------------------------------------
# Packing modules and optimizers into flat name -> tensor dicts, and back (strictly)
# ---------------------------------------------------------------------------------------------


def pack_module(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def unpack_module(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``prefix.*`` into ``module``; a missing or extra key is an error."""
    lead = prefix + "."
    state = {k[len(lead) :]: v for k, v in tensors.items() if k.startswith(lead)}
    expected = set(module.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise GenforgeError(f"checkpoint does not match the model '{prefix}': {detail}")
    for key, value in state.items():
        ref = module.state_dict()[key]
        if ref.shape != value.shape:
            raise GenforgeError(
                f"checkpoint does not match the model '{prefix}': {key} has shape {tuple(value.shape)}, model has {tuple(ref.shape)}"
            )
    module.load_state_dict(state, strict=True)


def pack_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors, JSON): moments go to safetensors, hyper-parameters to JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unpack_optimizer(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    lead = prefix + ".state."
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(lead):
            index, name = key[len(lead) :].split(".", 1)
            entries.setdefault(int(index), {})[name] = value
    for key, value in state["scalars"].items():
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    fresh = optimizer.state_dict()["param_groups"]
    if len(fresh) != len(state["param_groups"]):
        raise GenforgeError(
            f"checkpoint optimizer '{prefix}' has {len(state['param_groups'])} parameter groups, model has {len(fresh)}"
        )
    groups = []
    for new, saved in zip(fresh, state["param_groups"]):
        groups.append({k: (tuple(v) if isinstance(new.get(k), tuple) else v) for k, v in saved.items()})
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


# ---------------------------------------------------------------------------------------------


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its header's length (u64, little-endian) and then '{'; a
    # length such as 640 (0x280) begins with the same two bytes as a protocol-2 pickle.
    length = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < length <= path.stat().st_size - 8:
        return
    if any(head.startswith(m) for m in _PICKLE_MAGICS):
        raise GenforgeError(
            f"{path}: is a pickle (torch.save) file; genforge checkpoints are safetensors + JSON and never unpickle"
        )


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
