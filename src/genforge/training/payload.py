"""What a trainer puts in a checkpoint, and how a resume checks and restores it.

A checkpoint holds the trainer's modules and optimizers by name, the global and the family's
random streams, and the trainer's ``extra_state``; ``check_payload`` compares a checkpoint with
what this trainer would write before anything is restored, so a mismatch is one clear error.
"""

from __future__ import annotations

from typing import Any

import torch

from genforge import checkpoint as ckpt
from genforge.errors import GenforgeError
from genforge.training.api import Trainer

CUDA_RNG = "rng.cuda"  # optional: a run started on the CPU may resume on a GPU, and the other way


def checkpoint_payload(
    trainer: Trainer, noise: dict[str, torch.Generator]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"optimizers": {}}
    for name, module in trainer.modules().items():
        tensors.update(ckpt.pack_module(f"model.{name}", module))
    for name, opt in trainer.optimizers().items():
        t, s = ckpt.pack_optimizer(f"optim.{name}", opt)
        tensors.update(t)
        state["optimizers"][name] = s
    tensors["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":  # dropout on a GPU draws from the device's own generator
        tensors[CUDA_RNG] = torch.cuda.get_rng_state(trainer.device)
    for name, gen in noise.items():
        tensors[f"rng.{name}"] = gen.get_state()
    t, s = trainer.extra_state()
    tensors.update({f"extra.{k}": v for k, v in t.items()})
    state["extra"] = s
    return tensors, state


def check_payload(trainer: Trainer, noise: dict[str, torch.Generator], c: ckpt.Checkpoint) -> None:
    """Compare a checkpoint with what this trainer would write, before anything is restored.

    Every tensor and state entry the family expects must be there, with the same shape; the
    error names the first thing missing. (Optimizer moments exist only after a first step, so
    they are checked for consistency instead: every parameter with state has all its entries.)
    """
    tensors, state = checkpoint_payload(trainer, noise)
    where = f"{c.path}: incomplete or mismatched checkpoint"
    for name, value in tensors.items():
        if name.startswith("optim.") or name == CUDA_RNG:
            continue
        if name not in c.tensors:
            raise GenforgeError(f"{where}: tensor '{name}' is missing")
        if name.startswith(("model.", "extra.")) and tuple(c.tensors[name].shape) != tuple(value.shape):
            shape = tuple(c.tensors[name].shape)
            raise GenforgeError(f"{where}: tensor '{name}' has shape {shape}, the model has {tuple(value.shape)}")
    unexpected = sorted(k for k in c.tensors if k.startswith("model.") and k not in tensors)
    if unexpected:
        raise GenforgeError(f"{where}: tensor '{unexpected[0]}' does not belong to this model")
    records = trainer.state_records
    _check_entries(state["extra"], c.state.get("extra"), "state entry 'extra", where, records)
    for name in state["optimizers"]:
        saved = (c.state.get("optimizers") or {}).get(name)
        if not isinstance(saved, dict) or not {"param_groups", "scalars"} <= set(saved):
            raise GenforgeError(f"{where}: the state of optimizer '{name}' is missing")
        prefix = f"optim.{name}.state."
        entries: dict[str, set[str]] = {}
        for key in c.tensors:
            if key.startswith(prefix):
                index, field_name = key[len(prefix) :].split(".", 1)
                entries.setdefault(index, set()).add(field_name)
        for key in saved["scalars"]:
            index, field_name = key.split(".", 1)
            entries.setdefault(index, set()).add(field_name)
        fields = set().union(*entries.values()) if entries else set()
        for index, present in sorted(entries.items()):
            if present != fields:
                missing = sorted(fields - present)[0]
                raise GenforgeError(f"{where}: optimizer '{name}' entry {index}.{missing} is missing")
    if "elapsed" not in c.state:
        raise GenforgeError(f"{where}: state entry 'elapsed' is missing")


def _check_entries(expected: Any, saved: Any, label: str, where: str, records: frozenset[str] = frozenset()) -> None:
    """Every entry the trainer would write is in the saved state. Entries named in ``records``
    are values (a config kept for the record, written in whatever words its version used):
    they must be there, but their inside is not compared."""
    if not isinstance(expected, dict):
        return
    if not isinstance(saved, dict):
        raise GenforgeError(f"{where}: {label}' is missing")
    for key, value in expected.items():
        if key not in saved:
            raise GenforgeError(f"{where}: {label}.{key}' is missing")
        if key not in records:
            _check_entries(value, saved[key], f"{label}.{key}", where)


def restore_payload(trainer: Trainer, noise: dict[str, torch.Generator], c: ckpt.Checkpoint) -> None:
    check_payload(trainer, noise, c)
    for name, module in trainer.modules().items():
        ckpt.unpack_module(f"model.{name}", module, c.tensors)
    for name, opt in trainer.optimizers().items():
        ckpt.unpack_optimizer(f"optim.{name}", opt, c.tensors, c.state["optimizers"][name])
    torch.set_rng_state(c.tensors["rng.torch"])
    if trainer.device.type == "cuda" and CUDA_RNG in c.tensors:
        torch.cuda.set_rng_state(c.tensors[CUDA_RNG], trainer.device)
    for name, gen in noise.items():
        gen.set_state(c.tensors[f"rng.{name}"])
    extra = {k[len("extra.") :]: v for k, v in c.tensors.items() if k.startswith("extra.")}
    trainer.load_extra_state(extra, c.state.get("extra", {}))
