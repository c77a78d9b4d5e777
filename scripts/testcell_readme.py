"""Writes results/mad-cifar10-testcell/README.md from the two `maskdefense predict --json` files beside it
(test-time cell 4, the paper's, vs 8, the training cell). Run after scripts/cifar_queue.sh."""

import json
from pathlib import Path

out = Path(__file__).resolve().parents[1] / "results" / "mad-cifar10-testcell"
runs = {c: json.loads((out / f"predict-cell{c}.json").read_text()) for c in (4, 8)}
paper = {4: "82.65%", 8: "82.89%"}
first = runs[4]
lines = [
    "# MAD on CIFAR-10 (CPU preset): test-time cell size 4 (paper) vs 8",
    "",
    "The MAD-trained VGG16 at width 1/4 (`mad-cifar10-cpu`: 8x8 cells at rate 3/4 at training) on the first "
    f"{first['n']} CIFAR-10 test images, voting over copies masked with 4x4 cells (the paper's test setting, "
    "Tables 1, 2, 4) or 8x8 cells (the training cell size; paper Table 3's last column: 82.89% benign against "
    "82.65% for 4x4). Numbers from the two JSON files beside this README, written by:",
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
          f"sha256 {first['sha256'][:16]}. Produced by `scripts/cifar_queue.sh` and `scripts/testcell_readme.py`."]
(out / "README.md").write_text("\n".join(lines) + "\n")
print(f"wrote {out / 'README.md'}")
