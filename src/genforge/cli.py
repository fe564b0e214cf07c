"""The ``genforge`` command line: builds its parser from the command registry (each command in
``commands/`` declares its arguments and how it runs, see ``commands/registry.py``), dispatches to
the command named, and is the one error boundary: a ``GenforgeError`` or an operating-system error
(disk full, permission denied, a folder where a file belongs) becomes one ``genforge: error:`` line
and exit status 2; nothing reaches the user as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from genforge import __version__, commands
from genforge.errors import GenforgeError


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``genforge: error:`` line like every other error."""

    def error(self, message: str):
        raise GenforgeError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genforge", description="Train, sample, evaluate and compare GANs and VQ-VAEs.")
    parser.add_argument("--version", action="version", version=f"genforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands.registered():  # subparsers are Parsers too: argparse makes them of the parent's class
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return commands.get(args.command).run(args)
    except GenforgeError as e:
        print(f"genforge: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the operating system said no: disk full, permissions, a folder for a file
        where = f"{e.filename}: " if e.filename else ""
        print(f"genforge: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
