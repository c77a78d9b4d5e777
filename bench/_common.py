"""Shared machinery of the benchmark scripts in ``bench/`` (not part of the library).

Measurement policy (the project's rule for every speed target):

* a target is a RATIO measured in ONE run: the library path against a reference on the same model, the
  same inputs and the same weights state;
* every method is run once as warm-up first, then the methods are ALTERNATED for ``repeats`` rounds
  (round r runs them in order A, B, ... and round r+1 in reverse order), so a change of machine load
  hits all methods alike;
* the reported throughput of a method is the MEDIAN over its repeats; the ratio is the ratio of the
  medians (the median of the per-round ratios is recorded too);
* ``torch.set_num_threads`` is fixed before anything runs and recorded;
* results go to ``<out>/<name>.md`` (table: ratio, goal, met?) and ``<out>/<name>.json`` (everything,
  with the provenance record of :func:`maskdefense.provenance.run_metadata`), both written atomically.

Speeds are never asserted in tests; the smoke test only checks that the files are written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from maskdefense.provenance import atomic_write_json, atomic_write_text, run_metadata

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "bench"

#: A timed method: runs its (untimed) setup, then its timed work, and returns the seconds of the work.
Timed = Callable[[], float]


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds in all (smoke test); "
                   "the numbers are not meaningful")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (recorded)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per method (default: 5, quick: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and random draws")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <name>.md and <name>.json")
    return p


def setup_run(args: argparse.Namespace) -> None:
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    torch.manual_seed(args.seed)


def command(argv: Sequence[str] | None, script: str) -> str:
    """The command line of this run (``argv`` when main() was called from Python, else sys.argv)."""
    if argv is None:
        return " ".join(sys.argv)
    return " ".join([f"bench/{script}", *argv])


def timer() -> float:
    return time.perf_counter()


def timed_no_grad(fn: Callable[[], Any]) -> Timed:
    """A timed method running ``fn`` once under ``torch.no_grad()`` (inference)."""
    def run() -> float:
        with torch.no_grad():
            t0 = timer()
            fn()
            return timer() - t0
    return run


def interleaved(methods: dict[str, Timed], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Warm up every method, then alternate them for ``repeats`` rounds (order reversed every other
    round). Returns the list of measured seconds per method."""
    names = list(methods)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(float(methods[name]()))
    return times


def summarize(times: dict[str, list[float]], work: dict[str, float] | float, unit: str = "images") -> dict[str, Any]:
    """Throughput per method (``work`` units per second): median and all repeats."""
    out: dict[str, Any] = {}
    for name, ts in times.items():
        w = work[name] if isinstance(work, dict) else work
        rates = [w / t if t > 0 else float("inf") for t in ts]
        out[name] = {
            f"{unit}_per_s": statistics.median(rates),
            "seconds": ts,
            f"{unit}_per_s_repeats": rates,
            unit: w,
        }
    return out


def ratio(summary: dict[str, Any], num: str, den: str, unit: str = "images", den_scale: float = 1.0) -> dict[str, float]:
    """``median(num) / (median(den) * den_scale)`` and the median of the per-round ratios."""
    key = f"{unit}_per_s"
    r = summary[num][key] / (summary[den][key] * den_scale)
    rounds = [a / (b * den_scale) for a, b in zip(summary[num][f"{key}_repeats"], summary[den][f"{key}_repeats"])]
    return {"ratio": r, "ratio_median_of_rounds": statistics.median(rounds)}


def met(value: float | None, goal: float) -> bool | None:
    return None if value is None else bool(value >= goal)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metadata(args: argparse.Namespace, cmd: str, wall: float, **extra: Any) -> dict[str, Any]:
    return run_metadata(
        args.seed, command=cmd, threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
        repeats=args.repeats, quick=bool(args.quick), wall_time_s=round(wall, 3), **extra,
    )


def write_results(out: Path, name: str, record: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out = Path(out)
    j = atomic_write_json(out / f"{name}.json", record)
    m = atomic_write_text(out / f"{name}.md", markdown.rstrip() + "\n")
    return m, j


def md_header(title: str, meta: dict[str, Any]) -> str:
    v = meta.get("versions", {})
    return "\n".join([
        f"# {title}",
        "",
        f"- command: `{meta['command']}`",
        f"- git commit: `{meta.get('git_commit')}`; seed {meta.get('seed')}; torch threads {meta.get('threads')}"
        f" (interop {meta.get('interop_threads')}); repeats {meta.get('repeats')} (median, methods alternated, "
        "warm-up first)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- machine: {meta.get('machine', {}).get('platform')}, {meta.get('machine', {}).get('cpus')} CPUs; "
        f"started {meta.get('started')}; wall time {meta.get('wall_time_s')} s",
        "- **quick run: tiny sizes, numbers not meaningful**" if meta.get("quick") else "",
        "",
    ])
