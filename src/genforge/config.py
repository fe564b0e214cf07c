"""Typed configuration: dataclasses built from YAML and ``--set key=value`` overrides.

Each component owns a dataclass (data, training loop, model, optimisation) whose
``__post_init__`` checks its values. This module only knows how to build nested dataclasses
from plain dicts strictly: an unknown key or a value of the wrong type is an error naming the
dotted key, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genforge.errors import GenforgeError

# ---------------------------------------------------------------------------------------------
# Components shared by every family
# ---------------------------------------------------------------------------------------------

FITS = ("auto", "none", "resize", "center-crop", "pad")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    source: str = "fashion-mnist"  # a named dataset or a path (folder, IDX, CIFAR, .npz, .zip, packed)
    # Square side the images are fitted to at load time; 0 follows the data: its own size, or the
    # nearest size the model supports (a named dataset may prefer one: Fashion-MNIST pads to 32).
    resolution: int = 0
    fit: str = "auto"  # how to reach the resolution: auto | none | resize | center-crop | pad
    channels: int = 0  # 0 keeps the source's; 1 grey; 3 colour
    limit: int = 0  # use only the first N training images (0 = all)

    def __post_init__(self):
        non_negative(self, "resolution")
        one_of(self, "fit", FITS)
        check(self.channels in (0, 1, 3), "channels", "must be 0 (as stored), 1 or 3", self.channels)
        non_negative(self, "limit")


@dataclass
class TrainConfig:
    batch_size: int = 64  # the global batch: under torchrun each of K processes takes batch_size / K
    steps: int = 0  # stop after this many optimisation steps (0 = no step limit)
    minutes: float = 0.0  # stop after this much training time, summed over resumes (0 = no time limit)
    # steps and minutes both 0: training.loop.DEFAULT_MINUTES (30), printed at start
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    # auto: measured on this machine at start-up (fp32, bf16 / fp16 autocast; see training/probe.py)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (CUDA)
    channels_last: bool | None = None  # memory format for convolutions; null: measured with the precision
    probe_seconds: float = 1.5  # timing of the first candidate measured; the others take as many steps
    compile: bool = False  # torch.compile the step's modules
    log_every: int = 50
    sample_every: int = 500  # write samples/step-N.png (0 = only at the end)
    checkpoint_every: int = 500  # also on SIGINT/SIGTERM and at the end
    keep_checkpoints: int = 3
    eval_every: int = 0  # cheap evaluation during training (0 = off)
    eval_samples: int = 2000
    grid_images: int = 64
    tensorboard: bool | None = None  # TensorBoard events in run/tensorboard/; null: on when the package is installed
    # Under torchrun (several processes): batch norm over the global batch instead of each rank's share
    sync_batchnorm: bool = False
    rank_timeout_minutes: float = 30.0  # how long a process waits for the others before the job fails

    def __post_init__(self):
        positive(
            self,
            "batch_size",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "grid_images",
            "probe_seconds",
            "rank_timeout_minutes",
        )
        non_negative(self, "steps", "minutes", "sample_every", "eval_every", "eval_samples")
        check(0 <= self.seed < 2**63, "seed", "must be in 0 .. 2**63 - 1", self.seed)
        one_of(self, "device", DEVICES)
        one_of(self, "precision", PRECISIONS)


class ConfigError(GenforgeError):
    """A config value breaks its field's rule. Raised by a dataclass's ``__post_init__`` with the
    field's own name (``resolution``); ``from_dict`` adds the section path (``model.resolution``),
    so no model spells out the section it will be used in."""

    def __init__(self, key: str, rule: str, value: Any):
        self.key, self.rule, self.value = key, rule, value
        super().__init__(f"{key} {rule}, got {value!r}")

    def within(self, prefix: str) -> ConfigError:
        return ConfigError(prefix + self.key, self.rule, self.value)


def check(ok: bool, key: str, rule: str, value: Any) -> None:
    """``check(self.resolution > 0, "resolution", "must be positive", self.resolution)``."""
    if not ok:
        raise ConfigError(key, rule, value)


def one_of(obj: Any, name: str, choices: tuple[str, ...] | dict) -> None:
    value = getattr(obj, name)
    check(value in choices, name, f"must be one of {', '.join(choices)}", value)


def fill_from_data(obj: Any, section: str, **values: int) -> None:
    """Set fields the data decides (resolution, channels) in config section ``section``; a
    different value already set is an error."""
    for name, value in values.items():
        current = getattr(obj, name)
        if current and current != value:
            raise GenforgeError(f"{section}.{name} is {current} but the data gives {value}")
        setattr(obj, name, value)
    try:
        obj.__post_init__()
    except ConfigError as e:
        raise e.within(section + ".") from None


def positive(obj: Any, *names: str) -> None:
    """Each named field of ``obj`` must be > 0."""
    for name in names:
        check(getattr(obj, name) > 0, name, "must be positive", getattr(obj, name))


def non_negative(obj: Any, *names: str) -> None:
    for name in names:
        check(getattr(obj, name) >= 0, name, "must be >= 0", getattr(obj, name))


def fraction(obj: Any, *names: str) -> None:
    """Each named field must lie in [0, 1) (Adam betas, EMA decays)."""
    for name in names:
        check(0 <= getattr(obj, name) < 1, name, "must be in [0, 1)", getattr(obj, name))


# ---------------------------------------------------------------------------------------------
# Building dataclasses from dicts, strictly
# ---------------------------------------------------------------------------------------------


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise GenforgeError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GenforgeError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        factory = fields[name].default_factory
        if isinstance(value, dict) and factory is not dataclasses.MISSING and dataclasses.is_dataclass(hints[name]):
            # A section's defaults are the parent's (e.g. a prior's train.batch_size), not the bare class's.
            value = merge(to_dict(factory()), value)
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # the field's own name, placed in its section
        raise e.within(prefix) from None
    except TypeError as e:  # a required field without a default was not given
        raise GenforgeError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key + ".")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GenforgeError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1]
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise GenforgeError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise GenforgeError(f"{key} must be an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:  # what torch and numpy can hold
            raise GenforgeError(f"{key} must fit in 64 bits, got {value!r}")
        return value
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-4 as a string
            number = float(value)
        if number is None:
            raise GenforgeError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(number):  # YAML reads .inf and .nan as floats
            raise GenforgeError(f"{key} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # --set data.source=2024
            return str(value)
        raise GenforgeError(f"{key} must be a string, got {value!r}")
    raise AssertionError(f"config field {key} has an unsupported type {annotation}")


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain dict of YAML/JSON types (tuples become lists)."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``"train.batch_size=128"`` -> (["train", "batch_size"], 128); the value is read as YAML."""
    if "=" not in assignment:
        raise GenforgeError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise GenforgeError(f"--set has an empty key part in {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursively overlay ``overrides`` on ``base`` (new dict; inputs unchanged)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GenforgeError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise GenforgeError(f"{path}: not valid YAML{where}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise GenforgeError(f"{path}: the config must be a mapping of sections, got {type(values).__name__}")
    return values


def resolve(
    cls: type,
    presets: dict[str, dict[str, Any]],
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] = (),
    extra: dict[str, Any] | None = None,
) -> Any:
    """defaults < preset < YAML file < --set overrides < explicit flags (``extra``)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise GenforgeError(f"unknown preset {preset!r} (known: {', '.join(presets)})")
        values = merge(values, presets[preset])
    if config_file is not None:
        values = merge(values, read_yaml(config_file))
    for assignment in sets:
        values = merge(values, nest(*parse_set(assignment)))
    if extra:
        values = merge(values, extra)
    return from_dict(cls, values)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


__all__ = [
    "DataConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
    "resolve",
    "dump_yaml",
    "read_yaml",
    "parse_set",
    "merge",
    "nest",
    "field",
]
