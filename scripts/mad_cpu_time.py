"""Total compute of the MAD reproduction: training of every checkpoint the results use (the training records
each results folder keeps in its checkpoints/, each model counted once), plus every results folder's harness
and study wall time. Writes results/mad-cpu-time/ (README, csv, json) and copies those training records (small
JSON, no weights) into results/mad-cpu-time/checkpoints/.

Usage: .venv/bin/python scripts/mad_cpu_time.py

Wall time is on this 2-core machine (PyTorch uses both cores, so CPU time is at most 2x wall time). A
harness run's time is the larger of its run.json total (over resumptions) and the sum of its per-record
attack times (which survive a killed run); a study's own time is counted when it has no harness runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from maskdefense.provenance import run_metadata  # noqa: E402
from maskdefense.results import markdown_table, write_results  # noqa: E402

FOLDERS = ("mad-table5-mnist", "mad-table-cifar10", "mad-sweeps", "mad-fig3-mnist", "mad-fig3-cifar10", "mad-votes-mnist",
           "mad-votes-cifar10", "mad-ablation-mnist", "mad-ablation-cifar10", "mad-masks-mnist", "mad-masks-cifar10",
           "mad-mnist-cell4", "mad-cifar10-testcell", "mad-mnist-eps-sweep", "plain-mnist-eps-sweep",
           "harness-sanity-mnist", "lenet-mnist")


def _records_time(folder: Path) -> float:
    total = 0.0
    for name, opener in (("records.jsonl", open), ("records.jsonl.gz", gzip.open)):
        path = folder / name
        if path.exists():
            with opener(path, "rt") as f:
                for line in f:
                    if '"time_s"' in line:
                        total += float(json.loads(line).get("time_s", 0.0))
            return total
    return total


def harness_time(folder: Path) -> float:
    run = json.loads((folder / "run.json").read_text())
    return max(float(run.get("wall_time_s_total") or 0.0), _records_time(folder))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "mad-cpu-time"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    rows = []
    ck_dir = out / "checkpoints"
    if ck_dir.exists():
        shutil.rmtree(ck_dir)  # only the records of the models the results use now
    ck_dir.mkdir(parents=True)
    records: dict[str, Path] = {}  # checkpoint sha256 -> one of its kept training records
    for name in FOLDERS:
        for rec in sorted((ROOT / "results" / name / "checkpoints").glob("*.json")):
            records.setdefault(json.loads(rec.read_text())["sha256"], rec)
    for sha, rec in sorted(records.items(), key=lambda kv: kv[1].name):
        meta = json.loads(rec.read_text())
        if "wall_time_s" not in meta:
            continue
        name = rec.stem if not (ck_dir / rec.name).exists() else f"{rec.stem}-{sha[:8]}"  # two models, one preset
        shutil.copyfile(rec, ck_dir / f"{name}.json")
        slow = [h["seconds"] for h in meta.get("history", [])]
        rows.append({"item": f"train {name}", "kind": "training", "seconds": float(meta["wall_time_s"]),
                     "note": f"{meta.get('arch')}, {meta.get('epochs')} epochs, test acc "
                             f"{100 * float(meta.get('test_accuracy', float('nan'))):.2f}%, epochs "
                             f"{min(slow):.0f}-{max(slow):.0f} s" if slow else ""})
    for name in FOLDERS:
        folder = ROOT / "results" / name
        if not folder.exists():
            rows.append({"item": name, "kind": "missing", "seconds": 0.0, "note": "not run"})
            continue
        runs = sorted(p.parent for p in folder.rglob("run.json"))
        if runs:
            secs = sum(harness_time(r) for r in runs)
            note = f"{len(runs)} harness run(s)"
        else:
            meta = json.loads((folder / "results.json").read_text())["meta"] if (folder / "results.json").exists() \
                else {}
            secs = float(meta.get("wall_time_s") or 0.0)
            note = "study wall time" if meta else "no timing record"
            if not meta:  # command records of their own (`maskdefense predict --json`)
                timed = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
                timed = [t for t in timed if isinstance(t, dict) and "wall_time_s" in t]
                if timed:
                    secs = sum(float(t["wall_time_s"]) for t in timed)
                    note = f"{len(timed)} command record(s)"
            if str(meta.get("command", "")).startswith("maskdefense train"):
                secs, note = 0.0, "a training run (counted above)"
        if runs and not (folder / "checkpoints").exists():
            note += "; its models' training records are not kept (not counted above)"
        rows.append({"item": name, "kind": "evaluation", "seconds": round(secs, 1), "note": note})
    total = sum(r["seconds"] for r in rows)
    by_kind = {k: sum(r["seconds"] for r in rows if r["kind"] == k) for k in ("training", "evaluation")}
    meta = run_metadata(0)
    meta.update(total_wall_s=round(total, 1), by_kind={k: round(v, 1) for k, v in by_kind.items()},
                wall_time_s=round(time.perf_counter() - t0, 2))
    table = markdown_table(rows, ["item", "kind", "seconds", "note"], ["item", "kind", "wall time (s)", "note"],
                           {"seconds": lambda v: f"{v:,.0f}"})
    summary = (f"**Total: {total / 3600:.2f} hours of wall time on 2 CPU cores** (training {by_kind['training'] / 3600:.2f} h, "
               f"evaluation {by_kind['evaluation'] / 3600:.2f} h), i.e. at most {2 * total / 3600:.1f} CPU-core hours. "
               "Where another job shared the cores, both ran several-fold slower (a model's range of epoch times in "
               "the table shows it), so the same work on a quiet machine takes less.")
    write_results(out, title="MAD reproduction: total compute", intro=__doc__.split("\n\n")[0].replace("\n", " "),
                  sections=[summary, table], rows=rows, meta=meta)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
