#!/usr/bin/env bash
# The open issues' long measurements, in order of value per CPU hour, one at a time (2 cores: one model job at once).
# Every step is resumable (eval sweeps skip finished jobs, the benches skip finished problems), so after a kill or a
# reboot the same command goes on where it stopped:
#
#   mkdir -p runs && nohup bash scripts/measure.sh > runs/measure.log 2>&1 &
#   nohup bash scripts/checkpoint.sh 30 > runs/checkpoint.log 2>&1 &    # commit progress every 30 min
#
# A step that fails stops the queue (its error is the last thing in the log). Results land in runs/ (eval stores)
# and bench/results/; scripts/checkpoint.sh commits both (the stores as SQL text in docs/results/stores/). About 30 CPU hours in all on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/thinkscale
PY=.venv/bin/python
step() { echo "== $(date -u +%FT%TZ) $*"; "$@"; }

# The stores a previous machine committed (scripts/checkpoint.sh) become runs/NAME again, so their sweeps resume.
step $PY scripts/stores.py restore

# issues 6 and 8: the default model on 100 GSM8K test problems, greedy + SC@1..16 + best-of-N (~4 h)
step $TS eval --config docs/results/gsm8k/sweep-qwen0.5b.toml --out runs/gsm8k-qwen0.5b --workers 2 --quiet
# issue 8: the policy is fitted on GSM8K *train* problems only (~3 h), then checked on the test run above
step $TS eval --dataset gsm8k-train --limit 100 --model qwen2.5-coder-0.5b --strategy greedy \
    --strategy self-consistency --budgets 1,2,4,8,16 --out runs/train-0.5b --workers 2 --quiet
step $TS fit-policy runs/train-0.5b --out runs/train-0.5b/policy.json --wave-size 2
step $PY bench/adaptive.py runs/gsm8k-qwen0.5b --policy runs/train-0.5b/policy.json || true  # exit 2 = target missed
# issue 8: what DeepConf online stopping saves on the real model (~10 min)
step $PY bench/deepconf.py --problems 10 --out bench/results/deepconf.json
# issue 6: the other models on the same 100 test problems (~1 h + ~4 h), then the shared report
step $TS eval --config docs/results/gsm8k/sweep-smollm2.toml --out runs/gsm8k-smollm2 --workers 2 --quiet
step $TS eval --config docs/results/gsm8k/sweep-qwen1.5b.toml --out runs/gsm8k-qwen1.5b --workers 2 --quiet
step $TS eval --config docs/results/gsm8k/sweep-qwen0.5b-beam.toml --out runs/gsm8k-qwen0.5b-beam --workers 2 --quiet
step $TS report runs/gsm8k-qwen0.5b runs/gsm8k-qwen1.5b runs/gsm8k-smollm2 runs/gsm8k-qwen0.5b-beam \
    --out docs/results/gsm8k
# issue 5's table (not a condition of that issue, so after the runs issues 6 and 8 need): every strategy on 50
# GSM8K test problems at four parallel paths (~4-5 h)
step $TS eval --config docs/results/strategies/sweep-qwen0.5b-width4.toml --out runs/strategies-qwen0.5b \
    --workers 2 --quiet
# issue 7: SC-TIR vs SC at matched budgets (~14 h)
step $PY bench/tir.py --models qwen2.5-coder-0.5b qwen2.5-coder-1.5b --problems 100 --workers 3 --threads 1 \
    --out bench/results/tir
echo "== $(date -u +%FT%TZ) all measurements done"
