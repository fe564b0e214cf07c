"""Progress for long work (placeholder until the terminal-aware version lands)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def track(iterable, desc: str = "", total: int | None = None, enabled: bool = True):
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, file=sys.stderr, leave=False)


class Progress:
    def __init__(self, total=None, initial=0, desc="", enabled=True, file=None, interval=5.0, unit="step"):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not enabled,
            file=file or sys.stderr,
            unit=unit,
            dynamic_ncols=True,
        )

    def update(self, n=1):
        self._bar.update(n)

    def set_postfix(self, text):
        self._bar.set_postfix_str(text)

    def set_description(self, text):
        self._bar.set_description_str(text)

    def write(self, message):
        self._bar.write(message, file=sys.stderr)

    def close(self):
        self._bar.close()
