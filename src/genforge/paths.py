"""Where genforge keeps what it caches between runs (evaluators, real-data statistics, probes)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$GENFORGE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/genforge``."""
    if os.environ.get("GENFORGE_CACHE"):
        return Path(os.environ["GENFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genforge"
