"""``sampling.json``: a run's sampling settings, chosen by measurement (``genforge tune``).

The file lives in the run folder beside ``config.yaml``. ``commands/tune.py`` writes it (through
``write_sampling``, the one writer); a model that has sampling options reads it (``read_sampling``)
and uses its ``chosen`` options as its defaults for ``sample`` and ``evaluate``; options given
explicitly override them. Its shape:

    {"version": 1, "step": 4000, "data": "fashion-mnist", "features": "classifier", "n": 2000,
     "reference": {"split": "train", "start": 10000, "stop": 60000, "step": 5, "count": 10000,
                   "of": 60000, "said": "10,000 of the 60,000 training images (one in 5 ...)"},
     "seed": 1, "chosen": {"temperature": 0.9, "top_k": 128, "top_p": null, "cfg_scale": 1.5},
     "scores": {"fd": ..., "precision": ..., "recall": ..., "coverage": ..., ...},  # of chosen
     "default": {...},  # the scores of the network's own defaults, measured the same way
     "candidates": [{"options": {...}, "fd": ..., "recall": ..., ..., "seconds": ...}, ...]}

``reference`` names the real training images the candidates were scored against (the indices
``range(start, stop, step)``), none of which ``evaluate`` reports on; files written before it
existed lack it.
An option set to null means "off / the network's default" (no top-k, no nucleus, no truncation).
Priors (temperature, top-k, top-p, guidance, decoding steps) and GANs (truncation) both have one;
``TunedSampling`` is what their trained models share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genforge.errors import GenforgeError
from genforge.metrics.table import tie_breaks, tune_ranked
from genforge.runfolder import SAMPLING, RunFolder, atomic_write

VERSION = 1
# Frechet distances within this fraction of the lowest count as a tie (the sampling noise of a
# few thousand samples is larger); a tie goes to the higher recall + coverage.
TIE = 0.01


def best(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate best by the metric table's ranked metric (the lowest ``fd``); among those
    within ``TIE`` of it, the one with the best sum of the tie-break metrics (the highest recall +
    coverage), then the earliest, so the defaults win a full tie."""
    if not candidates:
        raise GenforgeError("no sampling candidates were scored")
    ranked = tune_ranked()
    sign = 1.0 if ranked.better == "lower" else -1.0  # ranked by sign * value, the lowest first
    low = min(sign * c[ranked.name] for c in candidates)
    ties = [c for c in candidates if sign * c[ranked.name] <= low + TIE * abs(low)]
    breaks = [(m.name, 1.0 if m.better == "higher" else -1.0) for m in tie_breaks()]
    return max(ties, key=lambda c: (sum(s * c.get(name, 0.0) for name, s in breaks), -candidates.index(c)))


def write_sampling(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` (the shape in the module's docstring) as ``run_dir/sampling.json``, atomically."""
    assert {"step", "chosen", "candidates"} <= set(result), sorted(result)
    return atomic_write(RunFolder(run_dir).sampling, json.dumps({"version": VERSION, **result}, indent=1) + "\n")


def read_sampling(run_dir: str | Path | None) -> dict[str, Any] | None:
    """The run's ``sampling.json``, or None when there is none; an unreadable one is an error."""
    if run_dir is None:
        return None
    path = RunFolder(run_dir).sampling
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GenforgeError(f"{path}: unreadable ({e}); run genforge tune again or delete it") from None
    if not isinstance(result, dict) or result.get("version") != VERSION or not isinstance(result.get("chosen"), dict):
        raise GenforgeError(f"{path}: not a genforge sampling file (version {VERSION}); run genforge tune again")
    return result


class TunedSampling:
    """A trained model's sampling settings: the run's tuned ones as defaults, explicit ones on top.

    A model mixing this in provides ``check_options(options) -> dict`` (refuses what it does not
    take and bad values; drops None, "the default") and ``sampling_space()``, and calls
    ``read_tuning(checkpoint_path)`` when it is built.
    """

    run_dir: Path | None
    tuning: dict[str, Any] | None  # the run's sampling.json, when there is one
    tuned: dict[str, Any]  # its chosen options, validated

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def sampling_space(self) -> dict[str, tuple]:
        """What ``genforge tune`` searches: each option and its candidate values (None = off)."""
        raise NotImplementedError

    def read_tuning(self, checkpoint_path: Path) -> None:
        """Read the run's sampling.json (none: no tuned settings); a bad one is an error now."""
        run = RunFolder.of_checkpoint(checkpoint_path)
        self.run_dir = run.root if run is not None else None
        self.tuning = read_sampling(self.run_dir)
        self.tuned = {}
        if self.tuning is not None:
            try:
                self.tuned = self.check_options(self.tuning["chosen"])
            except GenforgeError as e:
                raise GenforgeError(f"{RunFolder(self.run_dir).sampling}: {e}; run genforge tune again") from None

    def use(self, options: dict[str, Any]) -> None:
        """Draw with exactly ``options`` (None = off) from now on, as if the run had been tuned so
        (``genforge tune`` scores each candidate this way); the file is not touched."""
        self.tuned = self.check_options(options)
        self.tuning = None  # what sampling_note says: set here, not read from the file

    def sampling_options(self, options: dict[str, Any], tuned: bool = True) -> dict[str, Any]:
        """The options a draw uses: the tuned ones (unless ``tuned`` is False), overridden by the
        ones given (None = not given), validated."""
        given = {k: v for k, v in options.items() if v is not None}
        return self.check_options({**(self.tuned if tuned else {}), **given})

    def sampling_note(self, class_label=None, tuned: bool = True, **options) -> str:
        """One line saying which settings ``sample`` with these arguments uses, and where they came from."""
        used = self.sampling_options(options, tuned)
        shown = ", ".join(f"{k} {v}" for k, v in used.items() if k != "use_cache") or "the network's defaults"
        if tuned and self.tuned and self.tuning is None:
            return f"sampling: {shown} (set by the caller, not read from {SAMPLING})"
        if tuned and self.tuned:
            where = f"{RunFolder(self.run_dir).sampling}, tuned at step {self.tuning['step']}"
            overridden = sorted(k for k, v in options.items() if v is not None and k in self.tuned)
            if overridden:
                where += f"; {', '.join(overridden)} given explicitly"
            return f"sampling: {shown} (from {where})"
        if not tuned and self.tuned:
            return f"sampling: {shown} (the run's {SAMPLING} ignored)"
        return f"sampling: {shown} (no {SAMPLING}: genforge tune RUN chooses settings by measurement)"
