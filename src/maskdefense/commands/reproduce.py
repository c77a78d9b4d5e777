"""``maskdefense reproduce NAME``: run one of the papers' experiments into a results folder."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from ._common import add_seed_arg, echo


def studies() -> dict[str, Callable[..., dict[str, Any]]]:
    from ..experiments.mad.clean import STUDIES

    out = dict(STUDIES)
    from ..experiments.mad.sweeps import STUDIES as SWEEPS
    from ..experiments.mad.tables import STUDIES as TABLES

    out.update(TABLES)
    out.update(SWEEPS)
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="run a paper experiment (trains the models it needs) and write results/<name>",
        description="Experiments: " + ", ".join(sorted(studies())) + ". Each writes README.md (table beside "
        "the paper's numbers), results.csv, results.json (with command, seed, commit, versions, wall time) "
        "and plots. Models it needs are trained into --runs-dir first (resumable) when missing.",
    )
    p.add_argument("name", choices=sorted(studies()), help="which experiment")
    p.add_argument("--dataset", default=None, help="dataset (default: the experiment's own)")
    p.add_argument("--out", default=None, help="results folder (default results/<name>[-<dataset>])")
    p.add_argument("--runs-dir", default="runs", help="where trained models are kept (default runs/)")
    p.add_argument("--data-root", default=None, help="dataset folder (else $MASKDEFENSE_DATA, else user cache)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--autoattack-n", type=int, default=None,
                   help="mad-table: images for the AutoAttack-rand column (default per dataset; 0 skips it)")
    p.add_argument("--quick", action="store_true", help="seconds-long version on the embedded digits (for tests)")
    add_seed_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = studies()[args.name]
    kwargs: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "runs_dir": args.runs_dir,
                              "data_root": args.data_root, "log": echo}
    if args.dataset:
        kwargs["dataset"] = args.dataset
    if args.limit is not None:
        kwargs["limit"] = args.limit
    if args.autoattack_n is not None:
        kwargs["autoattack_n"] = args.autoattack_n
    import inspect

    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    suffix = f"-{args.dataset}" if args.dataset else ""
    out = args.out or os.path.join("results", args.name + suffix + ("-quick" if args.quick else ""))
    meta = fn(out, **kwargs)
    echo(f"wrote {out}/README.md (wall time {meta.get('wall_time_s')} s)")
    return 0
