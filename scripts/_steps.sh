# Sourced by the step scripts (recipe_rerun.sh, remix_run.sh, ...): run from the repository root with the data
# and the tools set, one step at a time (two heavy jobs on the 2 cores each run ~5x slower). A script defines
# `step NAME` (a case over its steps) and DEFAULT_STEPS, then calls `run_steps "$@"`; every step resumes
# when rerun.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[1]}")/.."
export MASKDEFENSE_DATA=${MASKDEFENSE_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
MD=${MD:-.venv/bin/maskdefense}

run_steps() {
  local steps=("$@") s
  [ ${#steps[@]} -gt 0 ] || steps=("${DEFAULT_STEPS[@]}")
  for s in "${steps[@]}"; do
    echo "=== $s $(date -u +%FT%TZ)"
    step "$s"
  done
  echo "=== done $(date -u +%FT%TZ)"
}
