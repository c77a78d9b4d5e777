#!/usr/bin/env bash
# Issue "Certified robustness for masking": the results, one job at a time (two jobs on the 2 cores each run
# ~5x slower). Every step resumes when rerun (trained models in runs/, per-image records in the results folders).
#   mnist     reproduce certify --dataset mnist (trains the ablation/Cutout/grid base classifiers from
#             plain-mnist-cpu, and mad-mnist-cpu if missing; the patch attack on every image; ~40 min)
#   cifar10   reproduce certify --dataset cifar10 (four VGG16/2 base classifiers fine-tuned from
#             plain-cifar10-cpu, ~75 min of training; certification and the patch attack ~80 min)
#   bench     bench/bench_certify.py (certification cost per image against its floor of masked passes)
# Then results/certify/overview.md holds both data sets beside the published certifiers (README.md there: the verdict).
# Usage: bash scripts/certify_run.sh [step ...]   (default: mnist cifar10 bench)
DEFAULT_STEPS=(mnist cifar10 bench)
step() {
  case "$1" in
    mnist|cifar10) $MD reproduce certify --dataset "$1" ;;
    bench) $PY bench/bench_certify.py ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
}
source "$(dirname "$0")/_steps.sh"
run_steps "$@"
