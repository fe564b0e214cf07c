"""``genforge sample``: images from any trained run that generates."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import checkpoint as ckpt
from genforge import families
from genforge.commands.registry import Command, add_device, count, seed
from genforge.errors import GenforgeError
from genforge.families.registry import Interpolator, Model, Reconstructor, Sampler
from genforge.families.sampling import TunedSampling
from genforge.images import save_grid, save_png, to_uint8
from genforge.runfolder import atomic_path
from genforge.training.devices import pick_device

FORMATS = ("png", "npz", "png-dir")


def sample(
    run: str | Path,
    n: int,
    out: str | Path,
    *,
    fmt: str = "png",
    seed: int = 0,
    nrow: int | None = None,
    interpolate: int | None = None,
    options: dict[str, Any] | None = None,
    device: torch.device = torch.device("cpu"),
) -> tuple[int, Path, str]:
    """Write ``n`` samples of ``run`` to ``out``; returns (count, path, note).

    ``options`` are the family's sampling options (truncation, class_label, temperature, ...);
    each model refuses the ones it does not take. ``interpolate`` = STEPS gives ``n`` strips of
    STEPS images walking between two latents (models that have a latent space). ``note`` says
    which sampling settings were used, for models that have tuned ones (``genforge tune``), else "".
    """
    if n <= 0:
        raise GenforgeError(f"the number of samples must be positive, got {n}")
    if nrow is not None and nrow <= 0:
        raise GenforgeError(f"images per row must be positive, got {nrow}")
    if fmt not in FORMATS:
        raise GenforgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    c = ckpt.load(run, kind=tuple(families.names()), map_location=device)
    model = families.get(c.kind).load(c, device)
    if not isinstance(model, Sampler):
        raise GenforgeError(f"{c.path}: {cannot_sample(model, c.kind)}")
    g = torch.Generator(device=device).manual_seed(seed)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if interpolate is not None:
        if not isinstance(model, Interpolator):
            raise GenforgeError("interpolation needs a model with a latent space (a GAN run)")
        images = model.interpolate(n, interpolate, g, **given)
        nrow = interpolate
    else:
        images = model.sample(n, g, **given)
    note = model.sampling_note(**given) if isinstance(model, TunedSampling) else ""
    return len(images), save_samples(to_uint8(images), out, fmt, nrow=nrow), note


def cannot_sample(model: Model, kind: str) -> str:
    """Why a model that is no ``Sampler`` gives no samples, and what would."""
    if isinstance(model, Reconstructor):
        return (
            "a VQ-VAE alone reconstructs but does not generate; train a prior on it (genforge train prior --vqvae RUN)"
        )
    return f"a {kind} run does not generate images"


def save_samples(images: np.ndarray, out: str | Path, fmt: str, nrow: int | None = None) -> Path:
    """uint8 (N, H, W, C) -> a grid PNG, an .npz (key 'images') or a folder of PNGs."""
    out = Path(out)
    if fmt == "png":
        return save_grid(images, out, nrow=nrow or max(1, math.ceil(math.sqrt(len(images)))))
    if fmt == "npz":
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=images)
        return out
    if out.exists() and not out.is_dir():
        raise GenforgeError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(images):
        save_png(picture, out / f"{i:06d}.png")
    return out


# ---------------------------------------------------------------------------------------------
# The command line: genforge sample (its sampling flags are the families' SampleFlags)
# ---------------------------------------------------------------------------------------------

OPTION = "option:"  # the namespace prefix of the families' sampling flags (their option key follows)


class _FamilyFlag(argparse.Action):
    """A family's sampling flag (``SampleFlag``): stores its value under ``option:KEY``; a former
    spelling also leaves a notice, printed once the samples are written."""

    def __init__(self, option_strings, dest, canonical: str, old: tuple[str, ...] = (), **kwargs):
        self.canonical, self.old = canonical, old
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        if option_string in self.old:
            notice = f"genforge: {option_string} is now {self.canonical} (the old spelling still works, for now)"
            namespace.notices = [*getattr(namespace, "notices", []), notice]


def _sample_flags(p: argparse.ArgumentParser) -> None:
    """The union of the families' sampling flags, each with what it means for each family."""
    declared: dict[str, list[tuple[str, families.SampleFlag]]] = {}
    for name in families.names():
        for flag in families.get(name).sample_flags:
            declared.setdefault(flag.flag, []).append((name, flag))
    for text, uses in declared.items():
        first = uses[0][1]
        for name, flag in uses[1:]:
            if (flag.key, flag.type, flag.value, flag.old) != (first.key, first.type, first.value, first.old):
                raise GenforgeError(f"families {uses[0][0]} and {name} declare {text} differently")
        kwargs: dict = {"nargs": 0, "const": first.value} if first.type is None else {"type": first.type}
        p.add_argument(
            text,
            *first.old,
            action=_FamilyFlag,
            canonical=text,
            old=first.old,
            dest=OPTION + first.key,
            default=None,
            metavar=first.metavar,
            help=_per_family(uses) + "".join(f" ({old}: its old name, still read)" for old in first.old),
            **kwargs,
        )


def _per_family(uses: list[tuple[str, families.SampleFlag]]) -> str:
    """'gan: ...; stylegan2: ...' (families that say the same thing share one entry)."""
    helps: dict[str, list[str]] = {}
    for name, flag in uses:
        helps.setdefault(flag.help, []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in helps.items())


def _given_options(args: argparse.Namespace) -> dict:
    """The families' sampling flags given on the command line, by option key."""
    return {k[len(OPTION) :]: v for k, v in vars(args).items() if k.startswith(OPTION) and v is not None}


def _check_sample_flags(run: Path, given: dict) -> None:
    """A sampling flag the run's family does not declare is one error line, before the model loads."""
    spec = families.family_of(run)
    if spec is None or not spec.sample_flags or not given:
        return  # a family with no sampling flags (a VQ-VAE): sample() says what is wrong with the run
    takes = {flag.key for flag in spec.sample_flags}
    wrong = [key for key in given if key not in takes]
    if wrong:
        flag = next(f.flag for name in families.names() for f in families.get(name).sample_flags if f.key == wrong[0])
        known = ", ".join(f.flag for f in spec.sample_flags) or "none"
        raise GenforgeError(f"{flag} does not apply to a {spec.name} run (its sampling flags: {known})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a run folder or checkpoint of a family that generates")
    p.add_argument("--n", type=count(1), default=64, help="how many images (default 64)")
    p.add_argument("--out", type=Path, required=True, help="the file (or, with --format png-dir, folder) to write")
    p.add_argument("--seed", type=seed, default=0, help="seed of the draws (default 0)")
    p.add_argument("--format", choices=FORMATS, default="png", help="grid PNG, .npz or PNGs")
    p.add_argument("--nrow", type=count(1), help="images per row in the grid")
    p.add_argument("--class", dest="class_label", type=count(0), help="class to generate (conditional models)")
    p.add_argument("--untuned", action="store_true", help="ignore the run's sampling.json (genforge tune)")
    _sample_flags(p)
    add_device(p)


def run(args: argparse.Namespace) -> int:
    options = _given_options(args)
    _check_sample_flags(args.run, options)
    interpolate = options.pop("interpolate", None)  # sample's own argument, not the model's option
    options.update(class_label=args.class_label, tuned=False if args.untuned else None)
    n, path, note = sample(
        args.run,
        args.n,
        args.out,
        fmt=args.format,
        seed=args.seed,
        nrow=args.nrow,
        interpolate=interpolate,
        options=options,
        device=pick_device(args.device),
    )
    print(f"wrote {n} samples to {path}")
    if note:
        print(note)
    for notice in getattr(args, "notices", []):
        print(notice, file=sys.stderr)
    return 0


SAMPLE = Command("sample", "sample images from a trained run", add_arguments, run)
