#!/usr/bin/env bash
# Historical: the CIFAR-10 MAD runs of the first CPU presets (now named mad-cifar10-adam-cpu and
# plain-cifar10-adam-cpu), one at a time. The recipe models and their results: scripts/recipe_rerun.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
MD=.venv/bin/maskdefense
bash scripts/train_models.sh mad-cifar10-adam-cpu plain-cifar10-adam-cpu
$MD reproduce mad-votes --dataset cifar10 --limit 2000
$MD reproduce mad-ablation --dataset cifar10 --limit 2000
for c in 4 8; do
  $MD predict --checkpoint runs/mad-cifar10-adam-cpu/model.safetensors --limit 2000 --mask-cell $c --mask-rate 0.75 \
    --votes 1 5 20 --json results/mad-cifar10-testcell/predict-cell$c.json
done
.venv/bin/python scripts/testcell_readme.py
