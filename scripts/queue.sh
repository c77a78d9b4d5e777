#!/usr/bin/env bash
# All the compute of the open issues, in the order of the issues, one job at a time (two heavy jobs on the 2
# cores each run ~5x slower). Start it in the background at the start of a session; a session's end kills it,
# and the next start resumes where it stopped: every step resumes from its trained models (runs/) and harness
# records, and a finished step is skipped (runs/steps/*.done). Estimated hours on 2 cores in brackets.
#   nohup bash scripts/queue.sh > logs/queue.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/recipe_rerun.sh table4 clean recipe archive train4  # CPU training recipe: MAD CIFAR-10 results [~0.5]
bash scripts/remix_run.sh                                 # REMIX and MagNet (adaptive step left)       [~5.5]
bash scripts/sfm_run.sh                                   # SFM-Defense                                [~6.8]
bash scripts/unmask_run.sh                                # UNMASK with feature-denoising blocks       [~6.3]
bash scripts/baselines_run.sh                             # MAD's Table 6 baselines                    [~6.0]
bash scripts/certify_run.sh                               # certification                              [~3.2]
