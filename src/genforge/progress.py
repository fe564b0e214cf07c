"""Progress of long work: a tqdm bar on a terminal, plain timed lines everywhere else.

A bar redraws itself with carriage returns, which is right on a terminal and wrong in a CI log,
a ``nohup`` file or a pipe (one enormous line, or thousands of them). So ``Progress`` looks at
its stream: on a terminal it is a tqdm bar, as before; otherwise it prints one plain line every
``interval`` seconds and a last one when it closes::

    step 1200/5000 (24%) | d_loss 0.612 | g_loss 1.93 | 950 img/s | ETA 03:10

The postfix (``set_postfix``) replaces the rate and ETA that ``Progress`` works out by itself,
because the caller often knows better: the training loop's losses and images/s are measured once
per logging window, and its time left also counts a minute budget. A caller that knows the time
left passes ``eta`` (seconds left, or None), asked afresh for every line, so the ETA keeps moving
between the caller's updates.

Library code never prints on its own: a function that has something to say takes a ``Reporter``
(default ``SILENT``) and says it, or counts its work, through it. The commands make one from
``--quiet``, so what a user sees is decided in one place and a library call is silent unless
given a reporter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

DEFAULT_INTERVAL = 5.0  # seconds between plain lines: a few hundred lines for a long run's log


def format_duration(seconds: float) -> str:
    """Seconds -> "MM:SS", or "H:MM:SS" from an hour on (the format tqdm shows)."""
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class Progress:
    """Counts work done; draws a bar on a terminal, prints plain timed lines elsewhere.

    ``total`` None means open-ended (no percentage, no ETA). ``initial`` is where a resumed job
    starts. ``clock`` is a seconds counter, replaceable in tests. Disabled, it prints nothing.
    """

    def __init__(
        self,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        enabled: bool = True,
        file: IO[str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        unit: str = "step",
        clock: Callable[[], float] = time.monotonic,
        eta: Callable[[], float | None] | None = None,
    ):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.total = total
        self.n = initial
        self.desc = desc
        self.postfix = ""
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.interval = interval
        self.unit = unit
        self._clock = clock
        self._eta = eta
        self._initial = initial
        self._start = clock()
        self._last_line = self._start
        self._closed = False
        self._bar: tqdm | None = None
        if enabled and is_terminal(self.file):
            self._bar = tqdm(
                total=total, initial=initial, desc=desc or None, unit=unit, file=self.file, dynamic_ncols=True
            )

    @property
    def plain(self) -> bool:
        """True when progress is printed as plain lines (enabled, not a terminal)."""
        return self.enabled and self._bar is None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.plain:
            now = self._clock()
            if now - self._last_line >= self.interval:
                self._print(self.line(now))
                self._last_line = now

    def set_postfix(self, text: str) -> None:
        """What follows the count, e.g. "d_loss 0.612 | 950 img/s" (and the ETA from ``eta``)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(" | ".join([text, *self._caller_eta()]), refresh=False)

    def set_description(self, text: str) -> None:
        """What precedes the count, e.g. the latest evaluation's scores."""
        self.desc = text
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=False)

    def write(self, message: str) -> None:
        """Print a line of its own without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.file)
        elif self.enabled:
            self._print(message)

    def line(self, now: float | None = None) -> str:
        """The plain line for the current state."""
        now = self._clock() if now is None else now
        parts = [self.desc] if self.desc else []
        if self.total:
            parts.append(f"{self.unit} {self.n}/{self.total} ({100 * self.n // self.total}%)")
        else:
            parts.append(f"{self.unit} {self.n}")
        if self.postfix:
            parts += [self.postfix, *self._caller_eta()]
        else:
            parts += self._rate_and_eta(now)
        return " | ".join(parts)

    def _caller_eta(self) -> list[str]:
        left = self._eta() if self._eta is not None else None
        return [] if left is None else [f"ETA {format_duration(left)}"]

    def _rate_and_eta(self, now: float) -> list[str]:
        done, seconds = self.n - self._initial, now - self._start
        if done <= 0 or seconds <= 0:
            return []
        rate = done / seconds
        shown = [f"{rate:.3g} {self.unit}/s"]
        if self.total:
            shown.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        return shown

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.plain:
            now = self._clock()
            self._print(f"{self.line(now)} | {format_duration(now - self._start)} elapsed")

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def track(
    iterable: Iterable[T],
    desc: str = "",
    total: int | None = None,
    enabled: bool = True,
    *,
    unit: str = "it",
    file: IO[str] | None = None,
    interval: float = DEFAULT_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield from ``iterable`` while counting it (encoding, sampling, feature extraction)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, 0, desc, enabled, file, interval, unit, clock) as progress:
        for item in iterable:
            yield item
            progress.update(1)


@dataclass(frozen=True)
class Reporter:
    """Where a library call's messages and progress go: its lines to ``file``, or nowhere.

    ``file`` None means the ``sys.stderr`` of the moment each line is written (so a stream
    swapped in later, e.g. by pytest's capsys, receives it). Disabled, it prints nothing and its
    bars count silently.
    """

    enabled: bool = True
    file: IO[str] | None = None

    @property
    def stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stderr

    def say(self, text: str) -> None:
        """One line on the stream, flushed so it shows before slow work that follows."""
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def progress(
        self,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        *,
        unit: str = "step",
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        eta: Callable[[], float | None] | None = None,
    ) -> Progress:
        """A ``Progress`` on this reporter's stream, disabled when the reporter is."""
        return Progress(total, initial, desc, self.enabled, self.stream, interval, unit, clock, eta)

    def track(
        self,
        iterable: Iterable[T],
        desc: str = "",
        total: int | None = None,
        *,
        unit: str = "it",
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[T]:
        """``track`` on this reporter's stream: yields every item, counts them only when enabled."""
        return track(iterable, desc, total, self.enabled, unit=unit, file=self.stream, interval=interval, clock=clock)

    def when(self, condition: bool) -> Reporter:
        """This reporter where ``condition`` holds, else ``SILENT`` (e.g. rank 0 of a torchrun job)."""
        return self if condition else SILENT


SILENT = Reporter(enabled=False)
