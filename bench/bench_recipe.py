"""Benchmark (issue "A CPU training recipe"): test accuracy against training wall time on CIFAR-10, for the
CPU presets of the training recipe and the first CPU presets (Adam, no augmentation) they replace.

Each preset's model is trained through the library (``experiments.common.ensure_model``: the same run
folders ``runs/<preset>-<hash>`` every experiment reuses), with the test set measured after every epoch
(``monitor_test``: outside the epoch's timed seconds, never used for any decision). The x axis is the
cumulative training time of the epochs (training pass + the 5000-image validation pass); a fine-tuned
preset (``init``) starts where its starting model ended, so its curve shows the whole cost.

For masked (MAD) presets the finished model is also scored as the defense: the vote of ``--votes`` masked
copies with the preset's test cell and with the training cell (4x4 and 8x8 on CIFAR-10), and one masked
copy, on the test set (``--vote-images``), beside the unmasked accuracy.

Targets (issue): plain VGG16 and plain ResNet-18 >= 90% test accuracy in <= 45 minutes of training on
2 cores; the MAD VGG16 vote of 5 with 4x4 test cells >= 75%.

Resumable: run it again after a kill; finished presets are read from their checkpoints and an
interrupted training resumes from its last epoch. Run it on a quiet machine (timings). Writes
``<out>/README.md``, ``<out>/results.json``, ``<out>/accuracy_vs_time.png`` and the training records
``<out>/models/<preset>.json`` (the checkpoints' sidecars), all atomically, after every preset.

    .venv/bin/python bench/bench_recipe.py                    # the full run (hours)
    .venv/bin/python bench/bench_recipe.py --quick --out /tmp/r   # digits, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from maskdefense.checkpoint import read_sidecar
from maskdefense.data import load_dataset
from maskdefense.defenses.mad import MADClassifier
from maskdefense.experiments.common import ensure_model
from maskdefense.provenance import atomic_write_json, atomic_write_text, run_metadata
from maskdefense.results import markdown_table, pct, save_figure
from maskdefense.rundir import exclusive
from maskdefense.seeding import seeded
from maskdefense.training.presets import Preset, create_preset

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("plain-cifar10-cpu", "mad-cifar10-cpu", "resnet18-cifar10-cpu", "plain-cifar10-adam-cpu",
           "mad-cifar10-adam-cpu")
#: preset -> (what the target is on, threshold, minutes or None); the targets of the issue.
TARGETS: dict[str, tuple[str, float, float | None]] = {
    "plain-cifar10-cpu": ("test accuracy", 0.90, 45.0),
    "resnet18-cifar10-cpu": ("test accuracy", 0.90, 45.0),
    "mad-cifar10-cpu": ("vote accuracy, test cell 4", 0.75, None),
    "mad-cifar10-scratch-cpu": ("vote accuracy, test cell 4", 0.75, None),
}


def _presets(args: argparse.Namespace) -> list[Preset]:
    if args.quick:  # digits: the plain model, then a masked one fine-tuned from it with the recipe's options
        return [create_preset("plain-digits"),
                replace(create_preset("mad-digits", epochs=2, init="plain-digits", optimizer="sgd", lr=0.05,
                                      schedule="onecycle", label_smoothing=0.1, weight_decay=5e-4,
                                      weight_decay_norm=False, precision="bf16", channels_last=True),
                        name="mad-digits-recipe")]
    return [create_preset(n) for n in args.presets]


def curve(sidecar: dict[str, Any], start: float = 0.0) -> list[dict[str, Any]]:
    """Per epoch: cumulative training seconds (from ``start``), validation and test accuracy."""
    out, t = [], start
    for h in sidecar["history"]:
        t += float(h["seconds"])
        out.append({"epoch": h["epoch"], "seconds": round(t, 2), "val_accuracy": h.get("val_accuracy"),
                    "test_accuracy": (h.get("monitor") or {}).get("accuracy")})
    return out


def measured_by(metadata: dict[str, Any]) -> dict[str, Any]:
    """A run's command, commit and start, from its metadata (a run record or a checkpoint's sidecar): the run
    that wrote a preset's entry (read its model, scored its vote) is kept in the entry."""
    return {k: metadata.get(k) for k in ("command", "git_commit", "started")}


def training_seconds(sidecar: dict[str, Any]) -> float:
    return sum(float(h["seconds"]) for h in sidecar["history"])


def starting_seconds(p: Preset, args: argparse.Namespace) -> float:
    """The training time of the model ``p`` starts from (and of its own start, and so on); 0 from scratch."""
    if p.init is None:
        return 0.0
    init = create_preset(p.init)
    _, meta = ensure_model(init, args.runs_dir, seed=args.seed, data_root=args.data_root, monitor_test=True)
    return starting_seconds(init, args) + training_seconds(read_sidecar(meta["path"]))


def vote_scores(model: torch.nn.Module, p: Preset, x: torch.Tensor, y: torch.Tensor, votes: int,
                seed: int) -> dict[str, Any]:
    """The defense's accuracy: ``votes`` masked copies and one, with the preset's test cell and its
    training cell."""
    out: dict[str, Any] = {"votes": votes, "n_images": len(y), "rate": p.test_rate}
    for cell in sorted({c for c in (p.test_cell, p.train_cell) if c is not None}):
        mad = MADClassifier(model, cell, p.test_rate).eval()
        t0 = time.perf_counter()
        for n in (1, votes):
            pred = mad.predict(x, n, generator=seeded(seed))
            out[f"cell{cell}_votes{n}"] = float((pred == y).float().mean())
        out[f"cell{cell}_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _first_reaching(points: list[dict[str, Any]], threshold: float) -> float | None:
    for pt in points:
        if pt["test_accuracy"] is not None and pt["test_accuracy"] >= threshold:
            return pt["seconds"]
    return None


def target_row(name: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    if name not in TARGETS:
        return None
    what, thr, minutes = TARGETS[name]
    if minutes is not None:
        first = _first_reaching(entry["curve"], thr)
        total = entry["curve"][-1]["seconds"]
        value = entry["test_accuracy"]
        met = first is not None and first <= 60 * minutes
        detail = (f"{pct(value)} after {total / 60:.1f} min; >= {pct(thr, 0)} first at "
                  + (f"{first / 60:.1f} min" if first is not None else "never"))
    else:
        v = entry.get("vote") or {}
        value = v.get(f"cell{entry['preset']['test_cell']}_votes{v.get('votes')}")
        met = value is not None and value >= thr
        detail = f"{pct(value)} ({v.get('n_images')} test images)"
    goal = f">= {pct(thr, 0)}" + (f" in <= {minutes:.0f} min" if minutes is not None else "") + f" ({what})"
    return {"preset": name, "goal": goal, "measured": detail, "met": "yes" if met else "no"}


def plot(entries: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, e in entries.items():
        pts = [pt for pt in e["curve"] if pt["test_accuracy"] is not None]
        ax.plot([pt["seconds"] / 60 for pt in pts], [100 * pt["test_accuracy"] for pt in pts], marker=".",
                label=f"{name} ({e['model']})")
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.axvline(45, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training wall time (minutes, 2 CPU cores)")
    ax.set_ylabel("test accuracy (%), unmasked")
    ax.set_title("CIFAR-10: test accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def readme(rec: dict[str, Any], notes: str = "") -> str:
    """The folder's README; ``notes`` (the folder's hand-written ``notes.md``: the analysis of the numbers,
    kept apart so that a rerun never overwrites it) is placed after the targets."""
    m = rec["metadata"]
    rows = []
    for name, e in rec["presets"].items():
        v = e.get("vote") or {}
        rows.append({
            "preset": name, "model": e["model"], "epochs": e["epochs"], "init": e.get("init") or "-",
            "train min": f"{e['own_seconds'] / 60:.1f}", "cumulative min": f"{e['curve'][-1]['seconds'] / 60:.1f}",
            "test acc (unmasked)": pct(e["test_accuracy"]),
            "vote, 4x4 test cells": pct(v.get(f"cell4_votes{v.get('votes')}")) if v else "-",
            "vote, 8x8 test cells": pct(v.get(f"cell8_votes{v.get('votes')}")) if v else "-",
            "1 masked copy, 4x4": pct(v.get("cell4_votes1")) if v else "-",
            "run": f"`{e['measured_by']['command'].removeprefix('bench/bench_recipe.py').strip() or '(all)'}` "
                   f"@ {e['measured_by']['git_commit'][:7]}" if e.get("measured_by") else "-",
        })
    targets = [r for r in (target_row(n, e) for n, e in rec["presets"].items()) if r]
    differs = "\n".join(f"- `{n}`: " + "; ".join(e["preset"]["differs"] or ["(no differences listed)"])
                        for n, e in rec["presets"].items())
    return "\n".join([
        "# CIFAR-10 training recipe: test accuracy against training time",
        "",
        f"Last run: `{m['command']}` (resumable; it keeps the presets earlier runs measured); git commit "
        f"`{m['git_commit']}`; seed {m['seed']}; torch {m['versions'].get('torch')}, {torch.get_num_threads()} "
        f"threads; machine {m['machine'].get('platform')}. Each preset was trained and scored by the run of its "
        "row (`run`: the command and commit in `results.json`, `measured_by`); each model's training record "
        "(checkpoint sidecar, with its own commit, versions and per-epoch seconds) is in `models/`.",
        "",
        "Time = cumulative seconds of the training epochs (training pass + 5000-image validation pass), on this "
        "2-core CPU with nothing else running; the test accuracy after each epoch is measured outside that time. "
        "A fine-tuned preset (`init`) is charged its starting model's time too (`cumulative min`). Votes: "
        f"{rec['config']['votes']} masked copies at the preset's rate, seeded masks, on "
        f"{rec['config']['vote_images'] or 'all'} test images.",
        "",
        "## Targets",
        "",
        markdown_table(targets) if targets else "(no target among these presets)",
        "",
        *([notes.strip(), ""] if notes.strip() else []),
        "## All presets",
        "",
        markdown_table(rows),
        "",
        "![accuracy against time](accuracy_vs_time.png)",
        "",
        "## How each preset differs from its paper",
        "",
        differs,
        "",
    ])


def render(rec: dict[str, Any], out: Path) -> None:
    """The README (with ``notes.md`` when the folder has one) and the plot, from the record."""
    notes = out / "notes.md"
    plot(rec["presets"], out / "accuracy_vs_time.png")
    atomic_write_text(out / "README.md", readme(rec, notes.read_text() if notes.exists() else ""))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets, trained in order")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "recipe-cifar10")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--votes", type=int, default=5)
    ap.add_argument("--vote-images", type=int, default=None, help="test images for the votes (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="digits, 2 epochs: a smoke test in seconds")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite README.md and the plot from results.json (e.g. after editing notes.md)")
    args = ap.parse_args(argv)
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    torch.set_num_threads(args.threads)
    cmd = " ".join(sys.argv) if argv is None else " ".join(["bench/bench_recipe.py", *argv])
    out = Path(args.out)
    with exclusive(out, "bench_recipe"):
        rec_path = out / "results.json"
        old = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        if args.render:
            if not old:
                raise SystemExit(f"--render: no {rec_path}")
            for name, e in old["presets"].items():  # records written before `measured_by` existed
                side = out / "models" / f"{name}.json"
                if "measured_by" not in e and side.exists():
                    e["measured_by"] = measured_by(json.loads(side.read_text()))
                    atomic_write_json(rec_path, old)
            render(old, out)
            return old
        rec: dict[str, Any] = {
            "benchmark": "bench_recipe", "issue": "A CPU training recipe",
            "config": {"votes": args.votes, "vote_images": args.vote_images, "quick": args.quick},
            "metadata": run_metadata(args.seed, command=cmd, threads=args.threads),
            "presets": {}}
        if old.get("config") == rec["config"]:
            rec["presets"] = old.get("presets", {})
        for p in _presets(args):
            model, meta = ensure_model(p, args.runs_dir, seed=args.seed, data_root=args.data_root,
                                       monitor_test=True)
            sidecar = read_sidecar(meta["path"])
            start = starting_seconds(p, args)
            entry = {"model": p.model, "epochs": p.epochs, "init": p.init, "preset": p.to_dict(),
                     "checkpoint_sha256": meta["sha256"], "test_accuracy": meta["test_accuracy"],
                     "own_seconds": round(training_seconds(sidecar), 2),
                     "curve": curve(sidecar, start)}
            prev = rec["presets"].get(p.name, {})
            reused = prev.get("checkpoint_sha256") == meta["sha256"] and prev.get("measured_by")
            entry["measured_by"] = prev["measured_by"] if reused else measured_by(rec["metadata"])
            if p.test_cell is not None:
                if reused and prev.get("vote"):
                    entry["vote"] = prev["vote"]
                else:
                    entry["measured_by"] = measured_by(rec["metadata"])
                    x, y = load_dataset(p.dataset, "test", root=args.data_root, limit=args.vote_images).tensors()
                    entry["vote"] = vote_scores(model, p, x, y, args.votes, args.seed)
            rec["presets"][p.name] = entry
            atomic_write_json(out / "models" / f"{p.name}.json", sidecar)
            atomic_write_json(rec_path, rec)
            render(rec, out)
            print(f"{p.name}: test accuracy {entry['test_accuracy']:.4f} after {entry['own_seconds'] / 60:.1f} min"
                  + (f"; vote {entry['vote']}" if "vote" in entry else ""), flush=True)
    return rec


if __name__ == "__main__":
    main()
