"""The command registry: what a ``genforge`` command declares, once, in its own module.

A command is a ``Command``: the word on the command line, its one-line help for ``genforge --help``,
a function that adds its arguments to the subparser the CLI made for it, and a function that runs
it (the parsed arguments in, the exit status out; it prints what it has to say). ``register`` adds
one; ``cli.py`` builds ``genforge``'s parser from ``registered()``, in registration order, and
dispatches with ``get``. A ``GenforgeError`` a command raises becomes the CLI's one error line.
See docs/architecture.md, "Adding a command".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from genforge.config import DEVICES
from genforge.errors import GenforgeError
from genforge.families.registry import count, number  # argument types, shared with the families' flags
from genforge.metrics.extractors import FEATURES

__all__ = ["Command", "add_device", "add_features", "count", "get", "number", "register", "registered", "seed"]


@dataclass(frozen=True)
class Command:
    name: str  # genforge NAME ...
    help: str  # its line in genforge --help
    add_arguments: Callable[[argparse.ArgumentParser], None]  # adds its arguments (and subcommands) to its parser
    run: Callable[[argparse.Namespace], int]  # parsed arguments -> exit status


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a command; ``genforge --help`` lists commands in the order they were registered."""
    if COMMANDS.get(command.name, command) is not command:
        raise GenforgeError(f"two commands are named '{command.name}'")
    COMMANDS[command.name] = command
    return command


def get(name: str) -> Command:
    if name not in COMMANDS:
        raise GenforgeError(f"unknown command '{name}' (known: {', '.join(COMMANDS)})")
    return COMMANDS[name]


def registered() -> list[Command]:
    return list(COMMANDS.values())


# ---------------------------------------------------------------------------------------------
# Arguments several commands take
# ---------------------------------------------------------------------------------------------


def seed(text: str) -> int:
    """A seed: an integer in 0 .. 2**63 - 1 (what torch's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**63 - 1, got {value}")
    return value


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default, choices=DEVICES, help="auto picks CUDA, then MPS, then CPU")


def add_features(p: argparse.ArgumentParser, default: str | None = "classifier", help: str = "") -> None:
    help = help or f"feature network (default {default})"
    p.add_argument("--features", default=default, choices=FEATURES, help=help)
