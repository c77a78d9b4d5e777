#!/usr/bin/env bash
# Adds the AutoAttack-rand columns to the MAD tables: reruns the table commands, which resume their finished
# harness runs (nothing recomputed) and run only the new eval-autoattack part.
# Usage: bash scripts/mad_autoattack.sh [mnist] [cifar10]
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
MD=${MD:-.venv/bin/maskdefense}
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(mnist cifar10)
for d in "${sets[@]}"; do
  echo "=== mad-table $d $(date -u +%FT%TZ)"
  if [ "$d" = mnist ]; then
    $MD reproduce mad-table --dataset mnist --out results/mad-table5-mnist
  else
    $MD reproduce mad-table --dataset "$d"
  fi
done
echo "=== done $(date -u +%FT%TZ)"
