#!/usr/bin/env bash
# Issue "A CPU training recipe": the CIFAR-10 models and results, one job at a time (two jobs on the 2 cores
# each run ~5x slower, and the recipe benchmark times its training). Every step resumes when rerun.
#   recipe   bench/bench_recipe.py: trains plain-cifar10-cpu, mad-cifar10-cpu (fine-tuned from it),
#            resnet18-cifar10-cpu and the first presets plain/mad-cifar10-adam-cpu, with test accuracy after
#            every epoch; results/recipe-cifar10 (targets, accuracy-against-time plot, MAD votes)
#   train4   bench_recipe.py with mad-cifar10-train4-cpu (MAD trained with the 4x4 test cells, Table 3's other
#            training cell): does the train/test cell mismatch explain the missed 75% vote target?
#   speed    bench/bench_train_speed.py: channels-last, bf16 autocast, torch.compile, batch 256 vs fp32
#   table4   reproduce mad-table --dataset cifar10 (gray-box, transfer, adaptive EOT, AutoAttack rand) on
#            the recipe models, into a fresh results/mad-table-cifar10
#   clean    the clean-accuracy results: mad-votes, mad-ablation (Table 2's clean column), the test-cell
#            check (4x4 vs 8x8 test cells), mad-fig3 and mad-masks on CIFAR-10
#   sweeps   Tables 1-3 (trains the rate and cell models: 4 x ~25 minutes, then gray-box attacks)
#   archive  the training records of the models behind each result into its folder's checkpoints/
# Usage: bash scripts/recipe_rerun.sh [step ...]   (default: recipe speed table4 clean archive)
DEFAULT_STEPS=(recipe speed table4 clean archive)
ck() { ls runs/"$1"-*/model.safetensors | head -1; }  # ensure_model's folder: runs/<preset>-<config hash>
keep() {  # keep DIR PRESET...: the training records of the models behind results/DIR
  local dir=results/$1 p; shift; mkdir -p "$dir/checkpoints"
  for p in "$@"; do cp "$(dirname "$(ck "$p")")/model.json" "$dir/checkpoints/$p.json"; done
}
step() {
  case "$1" in
    recipe) $PY bench/bench_recipe.py ;;
    train4) $PY bench/bench_recipe.py --presets mad-cifar10-train4-cpu ;;
    speed) $PY bench/bench_train_speed.py --repeats 3 ;;
    table4) $MD reproduce mad-table --dataset cifar10 ;;
    clean) for study in mad-votes mad-ablation mad-fig3 mad-masks; do $MD reproduce $study --dataset cifar10; done
           mkdir -p results/mad-cifar10-testcell
           for c in 4 8; do
             [ -f results/mad-cifar10-testcell/predict-cell$c.json ] || $MD predict --checkpoint "$(ck mad-cifar10-cpu)" \
               --mask-cell $c --mask-rate 0.75 --votes 1 5 20 --json results/mad-cifar10-testcell/predict-cell$c.json
           done ;;
    sweeps) $MD reproduce mad-sweeps ;;
    archive)
      [ -d results/mad-table-cifar10 ] && keep mad-table-cifar10 mad-cifar10-cpu plain-cifar10-cpu resnet18-cifar10-cpu
      for r in mad-ablation-cifar10 mad-votes-cifar10 mad-fig3-cifar10 mad-cifar10-testcell; do
        [ -d results/$r ] && keep "$r" mad-cifar10-cpu plain-cifar10-cpu
      done
      for f in results/mad-table-cifar10/*/records.jsonl; do [ -f "$f" ] && gzip -n -k -f "$f"; done ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
}
source "$(dirname "$0")/_steps.sh"
run_steps "$@"
