#!/usr/bin/env bash
# Issue "MAD's comparison baselines" (MAD Table 6): the CIFAR-10 run, one job at a time (two jobs on the 2 cores each
# run ~5x slower). Every step resumes when rerun (trained models in runs/, harness records in the results folder).
#   train   the models, one preset at a time (each skipped when trained): plain-cifar10-cpu (exists: 27 epochs x
#           92 s), MagNet's autoencoder (60 x ~20 s), the DnCNN with MSE then stability (8 x ~1.5 min + 8 x ~3.5 min),
#           Parseval (10 x ~95 s), PCL (10 x ~100 s), PGD-AT (8 x ~6 min: 3-step PGD): ~2 h
#   table6  reproduce mad-table6: gray-box examples against plain-cifar10-cpu on 200 images (~7 min), MagNet and
#           Denoised Smoothing on them (~15-22 min), Parseval / PCL / PGD-AT white-box with the APGD-CE and
#           PGD-CW rows (~8-13 min each), MagNet adaptive on 50 images with 3 detector weights and those rows
#           (~40-70 min), Denoised Smoothing adaptive with EOT on 25 (~35-50 min), budget checks of all five
#           (~90-125 min): ~3.7-4.8 h.
#           MAD's columns are read from results/mad-table-cifar10 (the Table 4 study; not rerun here)
#   pack    gzip the per-example records for committing (scripts/pack_records.sh)
# Usage: bash scripts/baselines_run.sh [step ...]   (default: train table6 pack)
DEFAULT_STEPS=(train table6 pack)
PRESETS=(plain-cifar10-cpu magnet-ae1-cifar10-cpu dncnn-mse-cifar10-cpu dncnn-cifar10-cpu parseval-cifar10-cpu
         pcl-cifar10-cpu pgdat-cifar10-cpu)
step() {
  case "$1" in
    train) for p in "${PRESETS[@]}"; do
             echo "--- $p"
             $PY -c "import sys; from maskdefense.experiments.common import ensure_model; ensure_model(sys.argv[1])" "$p"
           done ;;
    table6) $MD reproduce mad-table6 --dataset cifar10 --out results/mad-table6-cifar10 ;;
    pack) bash scripts/pack_records.sh ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
}
source "$(dirname "$0")/_steps.sh"
run_steps "$@"
