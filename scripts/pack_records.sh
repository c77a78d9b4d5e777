#!/usr/bin/env bash
# Compresses the per-example records of finished evaluations for committing: results/**/records.jsonl
# (ignored by git: tens of MB) -> records.jsonl.gz beside it. `zcat records.jsonl.gz > records.jsonl`
# restores a file the harness can resume from or re-summarize.
set -euo pipefail
cd "$(dirname "$0")/.."
# An archive whose content is unchanged is left as it is (a fresh gzip of the same records may differ in bytes).
find results -name records.jsonl | while read -r f; do
  if [ -f "$f.gz" ] && cmp -s <(gzip -dc "$f.gz") "$f"; then continue; fi
  gzip -n -9 -c "$f" > "$f.gz.tmp" && mv "$f.gz.tmp" "$f.gz"
  echo "$f.gz $(du -h "$f.gz" | cut -f1)"
done
