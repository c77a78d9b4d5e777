"""``maskdefense reproduce NAME``: run one of the papers' experiments into a results folder.

Every option is checked against the study before any work: an option the study does not take, or a
dataset it does not run on, is refused with one error line (nothing is silently dropped)."""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any, Callable

from ._common import UserError, add_seed_arg, echo, nonnegative_int, positive_int

Study = Callable[..., dict[str, Any]]


def catalog() -> dict[str, tuple[Study, tuple[str, ...] | None]]:
    """Study name -> (function, the datasets it runs on; None: any)."""
    from ..experiments import certify, remix, sfm, unmask
    from ..experiments.mad import clean, sweeps, tables, table6

    out: dict[str, tuple[Study, tuple[str, ...] | None]] = {}
    for mod in (clean, tables, table6, sweeps, remix, sfm, unmask, certify):
        out.update({name: (fn, mod.DATASETS[name]) for name, fn in mod.STUDIES.items()})
    return out


def studies() -> dict[str, Study]:
    return {name: fn for name, (fn, _) in catalog().items()}


# option -> the study's keyword argument; each is None unless given on the command line
_OPTIONS = {"--dataset": "dataset", "--limit": "limit", "--autoattack-n": "autoattack_n", "--runs-dir": "runs_dir",
            "--data-root": "data_root"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="run a paper experiment (trains the models it needs) and write results/<name>",
        description="Experiments: " + ", ".join(sorted(studies())) + ". Each writes README.md (table beside "
        "the paper's numbers), results.csv, results.json (with command, seed, commit, versions, wall time) "
        "and plots. Models it needs are trained into --runs-dir first (resumable) when missing. An option "
        "the experiment does not take is refused.",
    )
    p.add_argument("name", choices=sorted(studies()), help="which experiment")
    p.add_argument("--dataset", default=None, help="dataset (default: the experiment's own)")
    p.add_argument("--out", default=None, help="results folder (default results/<name>[-<dataset>])")
    p.add_argument("--runs-dir", default=None, help="where trained models are kept (default runs/)")
    p.add_argument("--data-root", default=None, help="dataset folder (else $MASKDEFENSE_DATA, else user cache)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N test images")
    p.add_argument("--autoattack-n", type=nonnegative_int, default=None,
                   help="mad-table: images for the AutoAttack-rand column (default per dataset; 0 skips it)")
    p.add_argument("--quick", action="store_true", help="seconds-long version on the embedded digits (for tests)")
    add_seed_arg(p)
    p.set_defaults(func=run)


def study_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of study ``args.name`` from the options given; refuses what it does not take."""
    fn, datasets = catalog()[args.name]
    accepted = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "log": echo}
    for option, key in _OPTIONS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if key not in accepted:
            hint = ""
            if key == "dataset" and datasets:
                hint = f" (it runs on {', '.join(datasets)} only)"
            raise UserError(f"{args.name} does not take {option}{hint}")
        kwargs[key] = value
    if args.dataset is not None:
        if args.quick:
            raise UserError("--quick runs on the embedded digits dataset: drop --dataset")
        if datasets is not None and args.dataset not in datasets:
            raise UserError(f"{args.name} runs on {', '.join(datasets)}, not {args.dataset!r}")
    return kwargs


def run(args: argparse.Namespace) -> int:
    from ..rundir import exclusive

    fn, _ = catalog()[args.name]
    kwargs = study_kwargs(args)
    suffix = f"-{args.dataset}" if args.dataset else ""
    out = args.out or os.path.join("results", args.name + suffix + ("-quick" if args.quick else ""))
    # a file, a read-only folder or a folder in use by another run: one error line before any work
    with exclusive(out, f"reproduce {args.name}"):
        meta = fn(out, **kwargs)
    echo(f"wrote {out}/README.md (wall time {meta.get('wall_time_s')} s)")
    return 0
