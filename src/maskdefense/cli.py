"""The ``maskdefense`` command line. Each sub-command lives in ``maskdefense.commands.<name>`` and
registers itself with ``add_parser(subparsers)``; ``run(args)`` returns the exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

COMMANDS = ("demo", "train", "info", "predict", "attack", "evaluate", "certify", "reproduce")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``maskdefense CMD: error: ...`` on stderr and exit code 2, like the
    errors the commands raise (sub-command parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="maskdefense",
        description="Mask-based adversarial defenses for image classifiers, and honest evaluation of them.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"maskdefense {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"maskdefense.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"maskdefense.commands.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .commands._common import user_errors

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as e:
        print(f"maskdefense {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `maskdefense info | head`: the reader left; nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; completed work is saved and the same command resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
