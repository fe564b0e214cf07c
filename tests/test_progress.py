"""Progress: plain timed lines off a terminal, a tqdm bar on one, silence when disabled."""

from __future__ import annotations

import io
import re
from pathlib import Path

import genforge
from genforge.progress import Progress, format_duration, track


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_the_interval_and_no_carriage_returns():
    out, clock = io.StringIO(), FakeClock()
    with Progress(total=5000, initial=1000, file=out, interval=5.0, clock=clock) as progress:
        progress.set_postfix("d_loss 0.612 | g_loss 1.93 | 950 img/s | ETA 03:10")
        for _ in range(256):  # 256 steps over 4 s: no line yet (binary fractions keep the sums exact)
            clock.now += 1 / 64
            progress.update()
        assert out.getvalue() == ""
        clock.now += 1.0
        progress.update()  # 5 s since the start: the first line
        for _ in range(64):
            clock.now += 1 / 32  # 2 s more: under the interval again
            progress.update()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "step 1257/5000 (25%) | d_loss 0.612 | g_loss 1.93 | 950 img/s | ETA 03:10"
    assert lines[1] == "step 1321/5000 (26%) | d_loss 0.612 | g_loss 1.93 | 950 img/s | ETA 03:10 | 00:07 elapsed"
    assert len(lines) == 2


def test_the_callers_eta_moves_between_postfix_updates():
    """The training loop sets its losses once per logging window; the ETA it knows (steps and a
    minute budget) is asked for every line, so a log does not repeat one frozen ETA."""
    out, clock = io.StringIO(), FakeClock()
    budget_end = clock.now + 60.0
    with Progress(total=None, file=out, interval=5.0, clock=clock, eta=lambda: budget_end - clock.now) as progress:
        progress.set_postfix("d_loss 0.612 | 950 img/s")
        for _ in range(2):
            clock.now += 5.0
            progress.update()
    lines = out.getvalue().splitlines()
    assert lines[0] == "step 1 | d_loss 0.612 | 950 img/s | ETA 00:55"
    assert lines[1] == "step 2 | d_loss 0.612 | 950 img/s | ETA 00:50"
    assert lines[2].startswith("step 2 | d_loss 0.612 | 950 img/s | ETA 00:50 | 00:10 elapsed")


def test_rate_and_eta_without_a_postfix_and_a_description():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(total=100, desc="encode", file=out, interval=5.0, unit="img", clock=clock)
    clock.now += 5.0
    progress.update(10)  # 2 img/s, 90 left: 45 s
    assert out.getvalue().splitlines() == ["encode | img 10/100 (10%) | 2 img/s | ETA 00:45"]
    progress.write("a message")
    progress.close()
    progress.close()  # a second close prints nothing more
    assert out.getvalue().splitlines()[1:] == [
        "a message",
        "encode | img 10/100 (10%) | 2 img/s | ETA 00:45 | 00:05 elapsed",
    ]


def test_open_ended_count():
    out, clock = io.StringIO(), FakeClock()
    with Progress(file=out, clock=clock) as progress:
        clock.now += 2.0
        progress.update(4)
    assert out.getvalue() == "step 4 | 2 step/s | 00:02 elapsed\n"


def test_disabled_prints_nothing():
    out, clock = io.StringIO(), FakeClock()
    with Progress(total=10, enabled=False, file=out, clock=clock, interval=0.001) as progress:
        for _ in range(10):
            clock.now += 1.0
            progress.update()
        progress.set_postfix("x")
        progress.write("hidden")
    assert out.getvalue() == ""
    assert list(track(range(3), "t", enabled=False, file=out)) == [0, 1, 2] and out.getvalue() == ""


def test_terminal_gets_a_tqdm_bar():
    out = FakeTerminal()
    with Progress(total=10, file=out, interval=0.001) as progress:
        assert not progress.plain
        progress.set_postfix("d_loss 0.5")
        progress.update(10)
        progress.write("said between redraws")
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "10/10" in text and "d_loss 0.5" in text and "said between redraws\n" in text


def test_track_counts_and_yields_everything():
    out, clock = io.StringIO(), FakeClock()

    def ticking():
        for i in range(6):
            clock.now += 1.0
            yield i

    assert list(track(ticking(), "features", total=6, file=out, interval=4.0, clock=clock)) == list(range(6))
    lines = out.getvalue().splitlines()
    assert lines[0] == "features | it 4/6 (66%) | 1 it/s | ETA 00:02"
    assert len(lines) == 2
    assert lines[-1].endswith("00:06 elapsed")


def test_format_duration():
    assert format_duration(0) == "00:00"
    assert format_duration(190.7) == "03:10"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(-5) == "00:00"


def test_only_progress_draws_bars():
    """A bar used directly elsewhere would write carriage returns into logs and pipes again."""
    root = Path(genforge.__file__).parent
    users = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.M)
    )
    assert users == ["progress.py"]
