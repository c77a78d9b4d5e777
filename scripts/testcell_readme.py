"""Writes results/mad-cifar10-testcell/README.md from the two `maskdefense predict --json` files beside it
(test-time cell 4, the paper's, vs 8, the training cell) and the training record of their checkpoint (the
sidecar `model.json` beside it). Run after `scripts/recipe_rerun.sh clean`."""

import json
from pathlib import Path

from maskdefense.checkpoint import read_sidecar
from maskdefense.experiments.common import training_summary
from maskdefense.provenance import atomic_write_text

root = Path(__file__).resolve().parents[1]
out = root / "results" / "mad-cifar10-testcell"
runs = {c: json.loads((out / f"predict-cell{c}.json").read_text()) for c in (4, 8)}
if len({d["sha256"] for d in runs.values()}) != 1:
    raise SystemExit("testcell_readme: the two predict files come from different checkpoints")
paper = {4: "82.65%", 8: "82.89%"}
first = runs[4]
p = read_sidecar(root / first["checkpoint"])["preset"]
lines = [
    "# MAD on CIFAR-10 (CPU preset): test-time cell size 4 (paper) vs 8",
    "",
    f"The MAD-trained {p['model']} (`{p['name']}`: {p['train_cell']}x{p['train_cell']} cells at rate "
    f"{p['train_rate']} at training; {training_summary(p)}) on "
    f"{'all' if first['n'] == 10000 else 'the first'} {first['n']} CIFAR-10 test images, voting over copies masked "
    "with 4x4 cells (the paper's test setting, Tables 1, 2, 4) or 8x8 cells (the training cell size; paper Table 3's "
    "last column: 82.89% benign against 82.65% for 4x4). Numbers from the two JSON files beside this README, "
    "written by:",
    "",
    *[f"    {runs[c]['command']}" for c in (4, 8)],
    "",
    "| test cell | unmasked | 1 vote | 5 votes | 20 votes | paper (5 votes) | wall time (s) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]
for c, d in runs.items():
    v = d["vote_accuracy"]
    lines.append(f"| {c}x{c} | {100 * d['unmasked_accuracy']:.2f}% | {100 * v['1']:.2f}% | {100 * v['5']:.2f}% | "
                 f"{100 * v['20']:.2f}% | {paper[c]} | {d['wall_time_s']} |")
lines += ["", f"Seed {first['seed']}; git commit {first['git_commit']}; versions in the JSON files; checkpoint "
          f"sha256 {first['sha256'][:16]}; its training record in `checkpoints/`. Produced by "
          "`scripts/recipe_rerun.sh clean` and `scripts/testcell_readme.py`."]
atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
