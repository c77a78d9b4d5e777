#!/usr/bin/env bash
# Issue "One core for every defense": the checks of the new core on real data, one job at a time (two jobs on
# the 2 cores each run ~5x slower). Every step resumes when rerun.
#   1. bench/bench_models.py      trainer and inference vs a plain loop (goal >= 0.97)
#   2. the MNIST models of MAD's Table 5 (plain-mnist-cpu, mad-mnist-cpu), trained through the new trainer
#   3. bench/bench_pgd.py         harness PGD vs a plain loop (goal >= 0.95), on the plain LeNet
#   4. reproduce mad-table --dataset mnist: the full Table 5 (left) again, to compare with the committed one
# Usage: bash scripts/core_rerun.sh [step ...]   (default: all steps)
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(bench_models models bench_pgd table5)
for s in "${steps[@]}"; do
  echo "=== $s $(date -u +%FT%TZ)"
  case "$s" in
    bench_models) $PY bench/bench_models.py ;;
    models) $PY -c "from maskdefense.experiments.common import ensure_model
for p in ('plain-mnist-cpu', 'mad-mnist-cpu'):
    _, m = ensure_model(p, 'runs', log=print, progress=False)
    print(p, m['path'], m['test_accuracy'])" ;;
    bench_pgd) ck=$(ls runs/plain-mnist-cpu-*/model.safetensors | head -1)
               $PY bench/bench_pgd.py --checkpoint "lenet5=$ck" ;;
    table5) .venv/bin/maskdefense reproduce mad-table --dataset mnist --out results/mad-table5-mnist ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
echo "=== done $(date -u +%FT%TZ)"
