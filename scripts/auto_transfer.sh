#!/usr/bin/env bash
# (issue 26 item 5) The transfer check of auto, resumable: the default model on 60 MATH-500 problems of levels 1-2
# (docs/results/auto/sweep-math500-l12.toml: greedy + self-consistency at 8), the packaged policy replayed on it
# against greedy (bench/adaptive.py), the ORM gate replayed at every threshold (bench/orm_gate.py: the ORM scores the
# greedy chains, cached), then the same gate on 100 GSM8K train problems the ORM was not fitted on (runs/train-0.5b-s1,
# the run scripts/measure.sh also makes), where a threshold is to be chosen. ~1.5 CPU h for the MATH run, ~4-5 for
# the train run (16 chains per problem). `scripts/auto_transfer.sh math` stops after the MATH part. One heavy job at a time on a 2-core machine: not beside the GRPO run.
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/thinkscale
PY=.venv/bin/python
R=bench/results/auto_vs_greedy
step() { echo "== $(date -u +%FT%TZ) $*"; "$@"; }
exit2ok() { "$@" || [ $? -eq 2 ]; }  # bench/adaptive.py exits 2 when issue 8's target is missed: not a failure here
$PY scripts/stores.py restore
step $TS eval --config docs/results/auto/sweep-math500-l12.toml --out runs/math500-l12-0.5b --workers 2 --quiet
step $PY scripts/stores.py save
# 8 stored chains per problem serve auto's budgets up to 2048 tokens (above that a replay would run out of chains)
step exit2ok $PY bench/adaptive.py runs/math500-l12-0.5b --budgets 1024,1280,1536,2048 --out $R/packaged-math500-l12.json
step $PY bench/orm_gate.py runs/math500-l12-0.5b --cache runs/orm/gate-scores.sqlite --out $R/orm-gate-math500-l12.json
# the verifier-difficulty policy chosen on train (scripts/auto_verifier.sh); the gate above cached the ORM's scores
step exit2ok $PY bench/adaptive.py runs/math500-l12-0.5b --policy $R/verifier/policy.json --budgets 1024,2048 \
    --score-cache runs/orm/gate-scores.sqlite --out $R/verifier/test-math500-l12.json
[ "${1:-all}" = math ] && { echo "== $(date -u +%FT%TZ) done (math only)"; exit 0; }
step $TS eval --dataset gsm8k-train --limit 100 --seed 1 --model qwen2.5-coder-0.5b --strategy greedy \
    --strategy self-consistency --budgets 1,2,4,8,16 --out runs/train-0.5b-s1 --workers 2 --quiet
step $PY scripts/stores.py save
step $PY bench/orm_gate.py runs/train-0.5b-s1 --cache runs/orm/gate-scores.sqlite --out $R/orm-gate-train-s1.json
echo "== $(date -u +%FT%TZ) done"
