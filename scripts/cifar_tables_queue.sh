#!/usr/bin/env bash
# MAD Table 4 and the models of Tables 1-3 (CIFAR-10), one job at a time (two at once on 2 cores run ~5x slower).
# Every step is resumable: rerun the script to continue after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
MD=${MD:-.venv/bin/maskdefense}
echo "=== mad-table cifar10 $(date -u +%FT%TZ)"
$MD reproduce mad-table --dataset cifar10
bash scripts/train_models.sh mad-cifar10-rate1_2-cpu mad-cifar10-rate4_5-cpu mad-cifar10-rate1_3-cpu mad-cifar10-train4-cpu
echo "=== done $(date -u +%FT%TZ)"
