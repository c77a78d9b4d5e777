#!/usr/bin/env bash
# MAD Tables 1-3 on CIFAR-10 (trains the sweep models it lacks, resumable; rerun to continue).
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
MD=${MD:-.venv/bin/maskdefense}
echo "=== mad-sweeps $(date -u +%FT%TZ)"
$MD reproduce mad-sweeps
echo "=== done $(date -u +%FT%TZ)"
