"""Pieces shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Library exceptions that mean "bad input" and are shown to CLI users as one clear line."""
    from ..checkpoint import CheckpointError
    from ..registry import UnknownNameError
    from ..validation import InputError

    errors: list[type[BaseException]] = [UserError, InputError, CheckpointError, UnknownNameError]
    try:
        from ..data import DataError

        errors.append(DataError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


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
    from ..experiments.common import seeded

    return seeded(seed)


def echo(msg: str) -> None:
    print(msg, flush=True)


def default_out(*parts: str) -> Path:
    return Path("runs").joinpath(*parts)
