#!/usr/bin/env bash
# The CIFAR-10 MAD runs of this session, one at a time (two jobs at once on two cores run ~5x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
MD=.venv/bin/maskdefense
bash scripts/train_models.sh mad-cifar10-cpu plain-cifar10-cpu
$MD reproduce mad-votes --dataset cifar10 --limit 2000
$MD reproduce mad-ablation --dataset cifar10 --limit 2000
for c in 4 8; do
  $MD predict --checkpoint runs/mad-cifar10-cpu/model.safetensors --limit 2000 --mask-cell $c --mask-rate 0.75 \
    --votes 1 5 20 --json results/mad-cifar10-testcell/predict-cell$c.json
done
.venv/bin/python scripts/testcell_readme.py
