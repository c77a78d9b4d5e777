#!/usr/bin/env bash
# Issue "SFM-Defense": the results on CIFAR-10, one job at a time (two jobs on the 2 cores each run ~5x slower).
# Every step resumes when rerun (trained models in runs/, harness records in the results folders). Estimated
# compute on 2 cores (src/maskdefense/experiments/sfm.py): ~6 h 50 in all.
#   train     reproduce sfm-models: the transfer surrogate (seed + 1) and masker + classifier of each
#             preprocessing (bits, median, nlm), and first the classifier resnet18-cifar10-cpu (the
#             pre-trained target model, ~35 min more) when runs/ does not hold it                     ~3 h 05
#   tables    reproduce sfm-tables: Tables 1 (black box) and 2 (gray box), budget check               ~45 min
#   whitebox  reproduce sfm-whitebox: Table 7, adaptive attacks (BPDA, EOT), APGD-CE, Square        ~2 h 10
#   cost      reproduce sfm-cost: Table 8 as ratios (training records, timed passes)                  ~3 min
#   w1        reproduce sfm-w1: Figure 3, 4 values of w1, 1 epoch each (needs tables)                ~32 min
#   ablation  reproduce sfm-ablation: Figure 5, without the semantic / reconstruction loss            ~14 min
#   samples   reproduce sfm-samples: Figure 4, defended samples                                      < 1 min
#   bench     bench/bench_sfm.py: defending cost vs the classifier, split masker / squeezer / classifier
# Usage: bash scripts/sfm_run.sh [step ...]   (default: all, in this order)
DEFAULT_STEPS=(train tables whitebox cost w1 ablation samples bench)
step() {
  case "$1" in
    train) $MD reproduce sfm-models --dataset cifar10 ;;
    tables|whitebox|cost|w1|ablation|samples) $MD reproduce "sfm-$1" --dataset cifar10 ;;
    bench) $PY bench/bench_sfm.py ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
}
source "$(dirname "$0")/_steps.sh"
run_steps "$@"
