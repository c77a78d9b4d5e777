"""Compare a rerun MAD table (``results/<name>/results.json``) with the version committed at an older git
revision: every accuracy column row by row, the difference, and the sampling noise of each difference.

The noise is the binomial standard error of the difference of two independent accuracy estimates,
``sqrt(p_old (1 - p_old) / n_old + p_new (1 - p_new) / n_new)``, with ``n`` the images the number is a mean
over (the correctly classified ones for the Defense columns, all for the robust ones). It covers the sampling
of images and masks only: when the models were retrained the two tables also differ by model-to-model
variation, which it does not cover, so a row is reported as within the noise at 2 standard errors and the
count of rows beyond it is stated rather than hidden.

Usage: .venv/bin/python scripts/compare_rerun.py results/mad-table5-mnist --old-rev 2265d2c
Writes ``<folder>/rerun-comparison.md`` and ``rerun-comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from maskdefense.provenance import atomic_write_json, atomic_write_text, run_metadata  # noqa: E402
from maskdefense.results import markdown_table  # noqa: E402

# column -> (what the mean is over: key of the clean record giving n, label)
COLUMNS = {
    "attack_acc": ("n_correct", "Attack (base model)"),
    "gray_box_defense": ("n_correct", "Defense, gray-box"),
    "black_box_defense": ("n_correct", "Defense, black-box"),
    "gray_box_robust": ("n", "robust, gray-box"),
    "black_box_robust": ("n", "robust, black-box"),
    "adaptive_defense": ("n_correct_sub", "Defense, adaptive (subset)"),
    "adaptive_robust": ("n_sub", "robust, adaptive (subset)"),
}


def _counts(meta: dict) -> dict[str, int]:
    c, s = meta["clean"], meta.get("clean_adaptive_subset") or {}
    return {"n_correct": c["n_correct"], "n": c["n"], "n_correct_sub": s.get("n_correct", 0), "n_sub": s.get("n", 0)}


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.inf


def _short(checkpoints: dict | None) -> str:
    return ", ".join(f"{k} {v[:12]}" for k, v in (checkpoints or {}).items()) or "-"


def compare(old: dict, new: dict) -> tuple[list[dict], dict]:
    n_old, n_new = _counts(old["meta"]), _counts(new["meta"])
    old_rows = {r["attack"]: r for r in old["rows"]}
    rows, beyond, total, diffs = [], 0, 0, {k: [] for k in COLUMNS}
    for r in new["rows"]:
        o = old_rows.get(r["attack"])
        if o is None:
            continue
        for col, (nk, label) in COLUMNS.items():
            a, b = o.get(col), r.get(col)
            if a is None or b is None:
                continue
            noise = math.hypot(_se(a, n_old[nk]), _se(b, n_new[nk]))
            d = b - a
            within = abs(d) <= 2 * noise
            beyond += not within
            total += 1
            diffs[col].append(d)
            rows.append({"attack": r["attack"], "column": label, "committed": a, "rerun": b, "difference": d,
                         "noise_se": noise, "within_2se": within})
    old_aa = {a["label"]: a for a in old["meta"].get("autoattack") or []}
    for a in new["meta"].get("autoattack") or []:  # the AutoAttack-rand column and PGD+EOT on the same images
        o = old_aa.get(a["label"])
        if o is None or o.get("robust_acc") is None or a.get("robust_acc") is None:
            continue
        noise = math.hypot(_se(o["robust_acc"], o["n"]), _se(a["robust_acc"], a["n"]))
        d = a["robust_acc"] - o["robust_acc"]
        beyond += abs(d) > 2 * noise
        total += 1
        rows.append({"attack": a["label"], "column": f"robust, adaptive (first {a['n']})", "committed": o["robust_acc"],
                     "rerun": a["robust_acc"], "difference": d, "noise_se": noise, "within_2se": abs(d) <= 2 * noise})
    clean = {k: {"committed": old["meta"]["clean"].get(k), "rerun": new["meta"]["clean"].get(k)}
             for k in ("base_clean_acc", "defense_clean_acc", "defense_clean_acc_on_correct", "n_correct")}
    summary = {
        "cells": total, "cells_beyond_2se": beyond,
        "mean_difference": {COLUMNS[k][1]: (sum(v) / len(v) if v else None) for k, v in diffs.items()},
        "clean": clean,
        "checkpoints": {"committed": old["meta"].get("checkpoints"), "rerun": new["meta"].get("checkpoints")},
    }
    return rows, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="results folder holding results.json (the rerun)")
    ap.add_argument("--old-rev", required=True, help="git revision holding the committed version")
    args = ap.parse_args()
    t0 = time.perf_counter()
    folder = Path(args.folder)
    rel = folder.resolve().relative_to(ROOT)
    old = json.loads(subprocess.run(["git", "show", f"{args.old_rev}:{rel.as_posix()}/results.json"], cwd=ROOT,
                                    check=True, capture_output=True, text=True).stdout)
    new = json.loads((folder / "results.json").read_text())
    rows, summary = compare(old, new)
    meta = run_metadata(None, old_rev=args.old_rev, committed_commit=old["meta"].get("git_commit"),
                        rerun_commit=new["meta"].get("git_commit"))
    meta["wall_time_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(folder / "rerun-comparison.json", {"meta": meta, "summary": summary, "rows": rows})
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    pts = lambda v: "-" if v is None else f"{100 * v:+.2f}"  # noqa: E731
    means = "\n".join(f"| {k} | {pts(v)} |" for k, v in summary["mean_difference"].items())
    clean = "\n".join(f"| {k} | {pct(v['committed']) if k != 'n_correct' else v['committed']} | "
                      f"{pct(v['rerun']) if k != 'n_correct' else v['rerun']} |" for k, v in summary["clean"].items())
    text = f"""# {new['meta'].get('study', folder.name)}: rerun through the new core vs the committed table

The committed table (git {args.old_rev}, produced at commit {old['meta'].get('git_commit')}) against the rerun
(commit {new['meta'].get('git_commit')}), cell by cell. Both ran the same command on the same images and seeds;
the models were retrained (the committed ones predate seeded parameter initialization, so they cannot be
rebuilt bit for bit): checkpoint sha256 {_short(summary['checkpoints']['committed'])} then
{_short(summary['checkpoints']['rerun'])}.
Noise = binomial standard error of the difference (images and masks only; not model-to-model variation).

**{summary['cells'] - summary['cells_beyond_2se']} of {summary['cells']} cells agree within 2 standard errors;
{summary['cells_beyond_2se']} differ by more.**

## Clean accuracy

| | committed | rerun |
| --- | --- | --- |
{clean}

## Mean difference over the attack rows (rerun - committed, points)

| column | mean difference |
| --- | --- |
{means}

## Every cell

{markdown_table(rows, ["attack", "column", "committed", "rerun", "difference", "noise_se", "within_2se"],
                ["attack", "column", "committed", "rerun", "rerun - committed", "noise (1 se)", "within 2 se"],
                {"committed": pct, "rerun": pct, "difference": pts, "noise_se": lambda v: f"{100 * v:.2f}"})}
## Provenance

- command: `{meta['command']}`
- git commit: {meta['git_commit']}; wall time {meta['wall_time_s']} s
"""
    atomic_write_text(folder / "rerun-comparison.md", text)
    print(f"wrote {folder / 'rerun-comparison.md'}: {summary['cells'] - summary['cells_beyond_2se']}/{summary['cells']} "
          "cells within 2 se")
    return 0


if __name__ == "__main__":
    sys.exit(main())
