"""The README's examples: every command of the tour parses, and the Python API example runs (on
synthetic data, with a three-step budget)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from genforge.cli import build_parser
from genforge.data import named
from synthetic import install_evaluator, write_npz

README = Path(__file__).resolve().parents[1] / "README.md"


def code_block(heading: str) -> str:
    """The first fenced block after ``heading``."""
    section = README.read_text().split(f"\n{heading}\n", 1)[1]
    start = section.index("```")
    body = section[section.index("\n", start) + 1 :]
    return body[: body.index("```")]


def tour_commands() -> list[str]:
    return [line for line in code_block("## A tour of the command line").splitlines() if line.startswith("genforge ")]


def test_tour_has_commands():
    firsts = {shlex.split(line)[1] for line in tour_commands()}
    assert {"data", "train", "sample", "reconstruct", "encode", "evaluate", "compare", "report", "demo"} <= firsts


@pytest.mark.parametrize("line", tour_commands())
def test_tour_command_parses(line):
    command = line.split("#", 1)[0]
    while "[" in command:  # optional parts, e.g. [--seed 1]
        start = command.index("[")
        command = command[:start] + command[command.index("]", start) + 1 :]
    build_parser().parse_args(shlex.split(command)[1:])


def test_python_api_example(tmp_path, monkeypatch):
    data = write_npz(tmp_path / "bars.npz")
    cache = tmp_path / "cache"
    install_evaluator(cache, str(data))
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    # The installed Fashion-MNIST must not stand in for the synthetic data.
    monkeypatch.setenv("GENFORGE_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    monkeypatch.setattr(named, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")

    code = code_block("## Python API")
    run, page = tmp_path / "runs" / "gan", tmp_path / "report.html"
    for old, new in (
        ("fashion-mnist", str(data)),
        ("train.steps=2000", "train.steps=3"),  # the precision probe is tested in test_precision.py
        ('"train.steps=3"', '"train.steps=3", "train.precision=fp32", "train.channels_last=false"'),
        ("n=10_000", "n=64"),
        ('"runs/gan"', repr(str(run))),
        ('"report.html"', repr(str(page))),
    ):
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    assert namespace["data"].images.shape == (256, 32, 32, 1)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["source"] == str(data)
    assert {"fd", "kid", "precision", "recall"} <= set(namespace["scores"])
    assert page.is_file()
