#!/usr/bin/env bash
# While the measurements run (scripts/measure.sh), commit their progress every MINUTES (default 30): the eval stores
# as SQL text (scripts/stores.py save -> docs/results/stores/), the reports under docs/results/, what the benches
# wrote to bench/results/ and the default policy once fit-policy has written it. A session
# that ends loses at most the last interval; the next one restores the stores and resumes.
#
#   nohup bash scripts/checkpoint.sh 30 > runs/checkpoint.log 2>&1 &
#
# It commits only those paths (`git commit -- PATHS`), so work in progress elsewhere in the tree is left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
case "$MINUTES" in ''|*[!0-9]*|0) echo "checkpoint.sh: MINUTES must be a positive integer, got '$MINUTES'" >&2; exit 2 ;; esac
# the dumps, the benches' results, the reports measure.sh writes, and the default policy fit-policy writes
PATHS=(docs/results bench/results thinkscale/strategies/default_policy.json)
while true; do
  sleep $((MINUTES * 60))
  summary=$(.venv/bin/python scripts/stores.py save | paste -sd ';' -)
  PRESENT=()
  for p in "${PATHS[@]}"; do [ -e "$p" ] && PRESENT+=("$p"); done
  git add -- "${PRESENT[@]}"
  if git diff --cached --quiet -- "${PRESENT[@]}"; then
    echo "$(date -u +%FT%TZ) nothing new"
    continue
  fi
  for try in 1 2 3; do  # another commit may hold the index lock for a moment
    if git commit -q -m "measurements: progress checkpoint ($summary)" -- "${PRESENT[@]}"; then
      echo "$(date -u +%FT%TZ) committed: $summary"; break
    fi
    sleep 5
  done
done
