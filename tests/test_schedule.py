"""The learning-rate schedule of the VQ-VAE and the prior: closed-form values, a minutes budget's
length fixed once from measured step times, kept across a resume, and the trainers following it."""

from __future__ import annotations

import math

import pytest

from genforge.families import schedule as S
from genforge.families.schedule import Schedule, lr_factor


def test_warmup_then_constant():
    assert [lr_factor(s, 4, 0, "constant", 0.1) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(10_000, 4, 100, "constant", 0.1) == 1.0  # a length changes nothing


def test_cosine_in_closed_form():
    warmup, total, final = 10, 110, 0.1
    assert lr_factor(4, warmup, total, "cosine", final) == pytest.approx(0.5)  # still warming up
    assert lr_factor(10, warmup, total, "cosine", final) == pytest.approx(1.0)  # decay starts at 1
    assert lr_factor(60, warmup, total, "cosine", final) == pytest.approx((1 + final) / 2)  # half-way
    quarter = final + (1 - final) * 0.5 * (1 + math.cos(math.pi / 4))
    assert lr_factor(35, warmup, total, "cosine", final) == pytest.approx(quarter)
    assert lr_factor(110, warmup, total, "cosine", final) == pytest.approx(final)
    assert lr_factor(500, warmup, total, "cosine", final) == pytest.approx(final)  # stays at the floor
    assert lr_factor(60, warmup, 0, "cosine", final) == 1.0  # length not known yet: at the start


def test_a_step_budget_fixes_the_length_at_once():
    schedule = Schedule("cosine", 0, 0.0, steps=100, minutes=0)
    assert schedule.total_steps == 100
    assert schedule.factor(50) == pytest.approx(0.5)
    assert Schedule("constant", 0, 0.0, steps=100, minutes=0).state() == {}  # nothing to keep


class FakeClock:
    def __init__(self, seconds_per_call: float):
        self.now, self.step = 0.0, seconds_per_call

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_minutes_budget_is_measured_once_then_kept(monkeypatch):
    monkeypatch.setattr(S.time, "perf_counter", FakeClock(1.0))  # one second per step
    schedule = Schedule("cosine", 0, 0.1, steps=0, minutes=1)  # 60 s: about 60 steps
    factors = [schedule.factor(step) for step in range(40)]
    # Fixed after 10% of the budget (6 s) and the settling steps: 60 steps at 1 s each.
    assert schedule.total_steps == 60
    assert factors[:10] == [1.0] * 10  # not known yet: the start of the curve
    assert factors[39] == pytest.approx(lr_factor(39, 0, 60, "cosine", 0.1))
    saved = schedule.state()
    assert saved == {"total_steps": 60, "seconds": 10.0}  # timed until the length was fixed

    # A resumed run on a machine twice as slow keeps the length its first session fixed.
    monkeypatch.setattr(S.time, "perf_counter", FakeClock(2.0))
    resumed = Schedule("cosine", 0, 0.1, steps=0, minutes=1)
    resumed.load_state(saved)
    assert [resumed.factor(s) for s in range(40, 60)] == [lr_factor(s, 0, 60, "cosine", 0.1) for s in range(40, 60)]
    assert resumed.total_steps == 60


def test_a_step_limit_caps_the_estimate(monkeypatch):
    monkeypatch.setattr(S.time, "perf_counter", FakeClock(1.0))
    schedule = Schedule("cosine", 0, 0.1, steps=30, minutes=1)
    for step in range(20):
        schedule.factor(step)
    assert schedule.total_steps == 30


def test_compilation_time_is_left_out_of_the_rate(monkeypatch):
    """The first steps of a session (compilation, warm caches) are slow; the length comes from
    the steps after them."""
    times = iter([0.0, 30.0] + [30.0 + k for k in range(1, 200)])  # the first step takes 30 s
    monkeypatch.setattr(S.time, "perf_counter", lambda: next(times))
    schedule = Schedule("cosine", 0, 0.1, steps=0, minutes=2)  # 120 s
    for step in range(20):
        schedule.factor(step)
    # Fixed at step 10, after 39 s: the rate since the 10th step is 1 s per step, so the 81 s
    # left hold 81 more steps (the 30 s step would have made it ~20).
    assert schedule.total_steps == 10 + (120 - 39)
