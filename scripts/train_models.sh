#!/usr/bin/env bash
# Trains the models the MAD results use, one after another (each resumable: rerun to continue).
# Usage: MASKDEFENSE_DATA=../shared/data bash scripts/train_models.sh [preset ...]
# (a preset that fine-tunes another, like mad-cifar10-cpu, needs --init-from: the experiments and
# bench/bench_recipe.py train it after its starting model.)
set -euo pipefail
cd "$(dirname "$0")/.."
MD=${MD:-.venv/bin/maskdefense}
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(mad-mnist-cpu plain-mnist-cpu plain-cifar10-cpu)
for p in "${presets[@]}"; do
  echo "=== $p $(date -u +%FT%TZ)"
  $MD train --preset "$p" --out "runs/$p" --no-progress
done
