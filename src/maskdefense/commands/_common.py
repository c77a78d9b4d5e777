"""Pieces shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Library exceptions that mean "bad input" and are shown to CLI users as one clear line."""
    from ..checkpoint import CheckpointError
    from ..data import DataError
    from ..eval.harness import ConfigMismatchError
    from ..eval.records import RecordFileError
    from ..experiments.common import MissingRunError
    from ..registry import UnknownNameError
    from ..rundir import OutputDirError
    from ..spec import SpecError
    from ..validation import InputError

    return (UserError, InputError, CheckpointError, UnknownNameError, OutputDirError, SpecError, DataError,
            ConfigMismatchError, RecordFileError, MissingRunError)


# ---- argparse value types: a bad option value is one clear line and exit code 2, before any work


def _number(kind: type, text: str) -> Any:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and (v != v or v in (float("inf"), float("-inf"))):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _bounded(kind: type, ok: Callable[[float], bool], rule: str) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` for which ``ok`` holds, else "must <rule>"."""

    def parse(text: str) -> Any:
        v = _number(kind, text)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must {rule}, got {v:g}")
        return v

    parse.__name__ = parse.__qualname__ = rule.replace(" ", "_")
    parse.__doc__ = f"argparse type: {'an integer' if kind is int else 'a finite number'} that must {rule}."
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "be >= 1")
nonnegative_int = _bounded(int, lambda v: v >= 0, "be >= 0")
positive_float = _bounded(float, lambda v: v > 0, "be > 0")
nonnegative_float = _bounded(float, lambda v: v >= 0, "be >= 0")
unit_interval = _bounded(float, lambda v: 0.0 <= v <= 1.0, "lie in [0, 1]")


def add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "digits") -> None:
    p.add_argument("--dataset", default=default_dataset,
                   help="digits (embedded, default), mnist, cifar10 or svhn" if default_dataset else "dataset name")
    p.add_argument("--data-root", default=None,
                   help="folder holding the dataset files (else $MASKDEFENSE_DATA, else the user cache dir)")


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def load_split(args: argparse.Namespace, split: str, limit: int | None = None) -> Any:
    from ..data import load_dataset

    return load_dataset(args.dataset, split, root=args.data_root, limit=limit)


def generator(seed: int) -> torch.Generator:
    from ..seeding import seeded

    return seeded(seed)


def echo(msg: str) -> None:
    print(msg, flush=True)


def default_out(*parts: str) -> Path:
    return Path("runs").joinpath(*parts)
