#!/usr/bin/env bash
# (issue 26 item 5) auto with a verifier difficulty: the greedy chain alone, judged by the packaged ORM, then the
# fitted action for its bin. Fits a small grid (bins x tolerance) on the 100 gsm8k-train problems of runs/train-0.5b
# with the ORM's scores cross-fitted (its own 75 training problems scored by heads refitted without them), replays
# each policy on those train problems, and replays the one chosen on train (the most accurate over greedy among
# those meeting the transfer target at some budget) on the GSM8K test run. Needs the committed stores and score
# caches (scripts/stores.py restore: runs/orm/judge-scores.sqlite holds the ORM's cross-fitted scores of every
# replayed chain, so the fits and replays load no model and read no features). Only a chain not in the cache makes
# the cross-fit, which needs the ORM's feature cache runs/orm/features-0.5b.sqlite (made by `thinkscale train orm`;
# rebuilt, cold, in ~3 CPU h).
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/thinkscale
PY=.venv/bin/python
R=bench/results/auto_vs_greedy/verifier
P=runs/auto-verifier
mkdir -p $R $P
$PY scripts/stores.py restore
judge=(--score-cache runs/orm/judge-scores.sqlite --cross-fit 4 --features runs/orm/features-0.5b.sqlite)
# bins, tolerance, token price (accuracy per 1000 generated tokens; 0: the most accurate action per bin)
CONFIGS=("3 0.005 0" "3 0.02 0" "3 0.05 0" "3 0.1 0" "4 0.02 0" "4 0.05 0" "6 0.02 0" "6 0.05 0"
         "3 0.005 0.02" "3 0.005 0.05" "3 0.005 0.1" "6 0.005 0.02" "6 0.005 0.05" "6 0.005 0.1")
names=()
for cfg in "${CONFIGS[@]}"; do
  read -r bins tol price <<< "$cfg"
  name=b$bins-tol$tol
  [ "$price" = 0 ] || name=$name-p$price
  names+=("$name")
  [ -f $R/train-$name.json ] && [ -f $P/policy-$name.json ] && continue  # done (rerun: delete them)
  $TS fit-policy runs/train-0.5b --out $P/policy-$name.json --bins "$bins" --tolerance "$tol" --token-price "$price" \
      --greedy-first --greedy-breaks-ties --first-wave 1 --wave-size 4 --difficulty verifier --verifier orm \
      --budgets 1024,2048,4096,8192 --threads 2 "${judge[@]}"
  $PY bench/adaptive.py runs/train-0.5b --policy $P/policy-$name.json "${judge[@]}" \
      --out $R/train-$name.json --plot $P/train-$name.png || [ $? -eq 2 ]
done
# the choice, on train only: the largest accuracy gain over greedy at a budget that meets the transfer target (<= 1.5x
# greedy's tokens where auto ends with greedy's answer); ties to the earlier config (fewer bins, smaller tolerance)
choice=$($PY - "$R" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path
best = None
for cfg in sys.argv[2:]:
    rows = json.loads((Path(sys.argv[1]) / f"train-{cfg}.json").read_text())["auto"]
    for r in rows:
        vs = r["versus_greedy"]
        if vs["meets_transfer_target"] and (best is None or vs["accuracy_minus_greedy"] > best[0] + 1e-12):
            best = (vs["accuracy_minus_greedy"], cfg, r["budget_tokens"])
print(best[1])
PY
)
echo "chosen on train: $choice"
cp "$P/policy-$choice.json" $R/policy.json
$PY bench/adaptive.py runs/gsm8k-qwen0.5b --policy $R/policy.json --score-cache runs/orm/gate-scores.sqlite \
    --out $R/test-gsm8k.json || [ $? -eq 2 ]
