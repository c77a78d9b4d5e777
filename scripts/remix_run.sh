#!/usr/bin/env bash
# Issue "REMIX and MagNet": the results, one job at a time (two jobs on the 2 cores each run ~5x slower). Every
# step resumes when rerun (trained models in runs/, harness records in the results folders).
#   fig2      reproduce remix-fig2 for MNIST then CIFAR-10 (trains the classifier if missing, MagNet's and
#             REMIX's autoencoders; CW and EAD at every kappa; every defense on the stored examples; budget check)
#   sweep     reproduce remix-sweep (n and k) on the Figure 2 examples (trains the inpainters of the other n)
#   adaptive  reproduce remix-adaptive: oblivious vs adaptive attacks on MagNet, REMIX and the REMIX detector
#   bench     bench/bench_remix.py (REMIX inference cost vs the classifier and the floor)
# Usage: bash scripts/remix_run.sh [step ...]   (default: fig2 sweep adaptive bench)
DEFAULT_STEPS=(fig2 sweep adaptive bench)
step() {
  case "$1" in
    fig2|sweep|adaptive) for ds in mnist cifar10; do $MD reproduce "remix-$1" --dataset "$ds"; done ;;
    bench) $PY bench/bench_remix.py ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
}
source "$(dirname "$0")/_steps.sh"
run_steps "$@"
