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
  # a finished step leaves runs/steps/<script>-<step>.done and is skipped afterwards (FORCE=1 reruns it)
  local steps=("$@") s mark
  [ ${#steps[@]} -gt 0 ] || steps=("${DEFAULT_STEPS[@]}")
  mkdir -p runs/steps
  for s in "${steps[@]}"; do
    mark=runs/steps/$(basename "$0" .sh)-$s.done
    if [ -f "$mark" ] && [ -z "${FORCE:-}" ]; then echo "=== $s: done $(cat "$mark") (FORCE=1 reruns it)"; continue; fi
    echo "=== $s $(date -u +%FT%TZ)"
    step "$s"
    date -u +%FT%TZ > "$mark"
  done
  echo "=== done $(date -u +%FT%TZ)"
}
