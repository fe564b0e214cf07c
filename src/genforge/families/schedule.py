"""The learning-rate schedule the VQ-VAE and prior trainers share: linear warm-up, then a constant
rate or a cosine decay to ``final_ratio`` of it over the run's budget.

The rate is a function of the optimizer step and the schedule's length only, never of the clock,
so a resumed run follows the curve of an uninterrupted one. A budget in steps (``train.steps``)
gives the length at once. A budget in minutes does not: the trainer times its own steps (between
calls, so logging and checkpoints count, as they count against the budget), and once
``ESTIMATE_AT`` of the minutes have passed it fixes the length at the steps done plus the steps
the rest of the budget holds at the rate measured since its first ``SETTLE_STEPS`` steps (which
pay for compilation and warm caches). Until then a cosine schedule is still at its start, where
its slope is zero. The length, once fixed, and the seconds timed are part of the checkpoint;
a resumed run keeps the length its first session fixed, even if ``train.minutes`` grew since.
"""

from __future__ import annotations

import math
import time
from typing import Any

from genforge.training.loop import DEFAULT_MINUTES

SCHEDULES = ("constant", "cosine")
ESTIMATE_AT = 0.1  # of a minutes budget: when a cosine schedule's length is fixed
SETTLE_STEPS = 10  # steps of each session left out of the rate (compilation, allocator, caches)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, final_ratio: float) -> float:
    """The base learning rate's multiplier at optimizer step ``step`` (0-based).

    Warm-up: (step + 1) / warmup_steps up to 1. Then ``constant`` stays at 1; ``cosine`` falls
    from 1 to ``final_ratio`` between the end of the warm-up and ``total_steps`` and stays there;
    with ``total_steps`` = 0 (not known yet) it stays at 1.
    """
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if schedule == "constant" or total_steps <= 0 or step < warmup_steps:
        return warm
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """One trainer's schedule: ``factor(step)`` at the start of each optimizer step."""

    def __init__(self, name: str, warmup_steps: int, final_ratio: float, steps: int, minutes: float):
        assert name in SCHEDULES, name
        self.name, self.warmup_steps, self.final_ratio = name, warmup_steps, final_ratio
        self.step_limit = steps
        self.budget_seconds = minutes * 60 if minutes > 0 else (DEFAULT_MINUTES * 60 if steps <= 0 else 0.0)
        self.total_steps = steps if self.budget_seconds == 0 else 0  # known now for a budget in steps
        self.seconds = 0.0  # timed between steps, summed over sessions, until the length is fixed
        self._last: float | None = None
        self._session_steps = 0
        self._mark: tuple[float, int] | None = None  # (time, step) where this session's rate starts

    def factor(self, step: int) -> float:
        if self.name == "cosine":
            self._tick(step)
        return lr_factor(step, self.warmup_steps, self.total_steps, self.name, self.final_ratio)

    def _tick(self, step: int) -> None:
        if self.total_steps:  # fixed: nothing left to measure
            return
        now = time.perf_counter()
        if self._last is not None:
            self.seconds += now - self._last
        self._last = now
        self._session_steps += 1
        if self._session_steps == SETTLE_STEPS:
            self._mark = (now, step)
        if self._mark is None or step <= self._mark[1] or self.seconds < ESTIMATE_AT * self.budget_seconds:
            return
        per_step = (now - self._mark[0]) / (step - self._mark[1])
        total = step + max(0.0, self.budget_seconds - self.seconds) / per_step
        if self.step_limit > 0:
            total = min(total, self.step_limit)
        self.total_steps = max(step + 1, round(total))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (a constant schedule keeps nothing: its rate needs no length)."""
        return {"total_steps": self.total_steps, "seconds": self.seconds} if self.name == "cosine" else {}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if self.name == "cosine" and state:
            self.total_steps, self.seconds = int(state["total_steps"]), float(state["seconds"])
