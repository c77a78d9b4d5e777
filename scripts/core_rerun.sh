#!/usr/bin/env bash
# Issue "One core for every defense": the checks of the new core on real data, one job at a time (two jobs on
# the 2 cores each run ~5x slower). Every step resumes when rerun.
#   1. bench/bench_models.py      trainer and inference vs a plain loop (goal >= 0.97)
#   2. the MNIST models of MAD's Table 5 (plain-mnist-cpu, mad-mnist-cpu), trained through the new trainer
#   3. bench/bench_pgd.py         harness PGD vs a plain loop (goal >= 0.95), on the plain LeNet
#   4. reproduce mad-table --dataset mnist: the full Table 5 (left) again, to compare with the committed one
#   5. the other MNIST results on the same (retrained) models: clean accuracy (ablation), votes, Figure 3,
#      the epsilon sweeps of the MAD and the plain LeNet, and the 4x4-cell check
#   6. lenet: the plain 5-epoch LeNet of the README and the harness sanity check on it
#   7. archive: the training records (checkpoint metadata JSON) of the models behind each of those results
#      into its folder's checkpoints/, and the per-example records gzipped beside records.jsonl
# Usage: bash scripts/core_rerun.sh [step ...]   (default: all steps)
set -euo pipefail
cd "$(dirname "$0")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(bench_models models bench_pgd table5 mnist_studies eps_sweeps cell4 lenet archive)
MD=.venv/bin/maskdefense
ck() { ls runs/"$1"-*/model.safetensors | head -1; }  # ensure_model's folder: runs/<preset>-<config hash>
SWEEP="pgd-linf:eps=0.05;pgd-linf:eps=0.1;pgd-linf:eps=0.2;pgd-linf:eps=0.3;pgd-l2:eps=1;pgd-l2:eps=2;pgd-l2:eps=3"
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
    table5) $MD reproduce mad-table --dataset mnist --out results/mad-table5-mnist ;;
    mnist_studies) for study in mad-ablation mad-votes mad-fig3; do $MD reproduce $study --dataset mnist; done ;;
    eps_sweeps) $MD evaluate --checkpoint "$(ck mad-mnist-cpu)" --dataset mnist --defense mad:cell=7,rate=0.75,n=5 \
                  --attacks "$SWEEP" --threat gray-box,adaptive --n 300 --out results/mad-mnist-eps-sweep --no-progress
                $MD evaluate --checkpoint "$(ck plain-mnist-cpu)" --dataset mnist --defense none \
                  --attacks "$SWEEP" --threat gray-box --n 300 --out results/plain-mnist-eps-sweep --no-progress ;;
    cell4) $MD train --preset mad-mnist-cell4-cpu --out runs/mad-mnist-cell4-cpu --results results/mad-mnist-cell4 \
             --no-progress
           $MD predict --checkpoint runs/mad-mnist-cell4-cpu/model.safetensors --votes 1 5 20 --adaptive \
             --json results/mad-mnist-cell4/predict.json ;;
    lenet) $MD train --dataset mnist --model lenet5 --epochs 5 --out runs/lenet-mnist --results results/lenet-mnist \
             --no-progress
           $MD evaluate --checkpoint runs/lenet-mnist/model.safetensors --dataset mnist --defense none \
             --attacks "pgd-linf:eps=0.3;pgd-linf:eps=0.1;fgsm-linf:eps=0.3" --threat gray-box --n 1000 \
             --out results/harness-sanity-mnist --no-progress ;;
    archive)
      keep() { local dir=results/$1; shift; mkdir -p "$dir/checkpoints"
               for p in "$@"; do cp "$(dirname "$(ck "$p")")/model.json" "$dir/checkpoints/$p.json"; done; }
      for r in mad-table5-mnist mad-ablation-mnist mad-votes-mnist mad-fig3-mnist; do keep "$r" mad-mnist-cpu plain-mnist-cpu; done
      keep mad-mnist-eps-sweep mad-mnist-cpu
      keep plain-mnist-eps-sweep plain-mnist-cpu
      mkdir -p results/mad-mnist-cell4/checkpoints
      cp runs/mad-mnist-cell4-cpu/model.json results/mad-mnist-cell4/checkpoints/mad-mnist-cell4-cpu.json
      mkdir -p results/harness-sanity-mnist/checkpoints
      cp runs/lenet-mnist/model.json results/harness-sanity-mnist/checkpoints/lenet-mnist.json
      for f in results/mad-table5-mnist/*/records.jsonl results/mad-mnist-eps-sweep/records.jsonl \
               results/plain-mnist-eps-sweep/records.jsonl results/harness-sanity-mnist/records.jsonl; do gzip -n -k -f "$f"; done ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
echo "=== done $(date -u +%FT%TZ)"
