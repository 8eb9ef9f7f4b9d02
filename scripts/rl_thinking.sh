#!/usr/bin/env bash
# (issue 27) A thinking model for the engine, resumable: GRPO on the default model with the think system prompt and
# the format reward (reasoning inside <think>...</think>, then \boxed{}), then budget forcing on it at three thinking
# budgets over the 100 GSM8K test problems (docs/results/rl/sweep-think-0.5b-bf.toml), then its greedy and SC@8
# against the base's (docs/results/rl/sweep-think-0.5b.toml, bench/rl_compare.py). Rerun after a kill: training
# goes on from its newest checkpoint, the eval resumes its store. Run it after scripts/rl_pipeline.sh (one heavy job
# at a time on a 2-core machine). Needs: bash scripts/install.sh --train. The trained run is kept in git by
# `stores.py save-rl` (its adapter, ~35 MB; commit docs/results/stores/rl/), so the sweep can resume on a new machine;
# a session that must stop mid-training keeps the newest checkpoint the same way (`stores.py save-rl runs/rl/NAME`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rl_lib.sh
OUT=runs/rl/grpo-0.5b-think
STEPS=${STEPS:-80}
EVERY=${EVERY:-80}  # held-out evals (32 problems, ~14 min each on 2 cores) at 0 and 80; the steps' rewards are the curve
$PY scripts/stores.py restore
args=(--model qwen2.5-coder-0.5b --data gsm8k-train --system think --rewards correct,format
      --problems-from runs/train-0.5b --heldout 32 --num-generations 4 --max-completion-tokens 384 --steps "$STEPS"
      --save-every 5 --eval-every "$EVERY" --generation llamacpp --out "$OUT")
train_or_export "$OUT" "${args[@]}"
step $PY scripts/stores.py save-rl "$OUT"
step $TS eval --config docs/results/rl/sweep-think-0.5b-bf.toml --out runs/gsm8k-think-0.5b-bf --workers 2 --quiet
step $TS report runs/gsm8k-think-0.5b-bf --out docs/results/rl/think-bf
# greedy and SC@8 on the training prompt, against the base through the same export (the control) and against the base
# model's own boxed-prompt run (runs/gsm8k-qwen0.5b: greedy 0.290)
[ -f "$OUT/model-0.gguf" ] || step $TS train export "$OUT" --checkpoint 0
step $TS eval --config docs/results/rl/sweep-think-0.5b.toml --out runs/gsm8k-think-0.5b --workers 2 --quiet
step $TS report runs/gsm8k-think-0.5b --out docs/results/rl/think
G='greedy:prefill=<think>\n'
SC='self-consistency:prefill=<think>\n'
step $PY bench/rl_compare.py runs/gsm8k-think-0.5b runs/gsm8k-think-0.5b --base-model "$OUT/model-0.gguf" \
    --trained-model "$OUT/model.gguf" --strategy "$G:1" --strategy "$SC:8" \
    --out bench/results/rl/compare-think-0.5b-vs-export-base.json
step $PY bench/rl_compare.py runs/gsm8k-qwen0.5b runs/gsm8k-think-0.5b --trained-model "$OUT/model.gguf" \
    --strategy greedy:1 --strategy self-consistency:8 --trained-strategy "$G" --trained-strategy "$SC" \
    --out bench/results/rl/compare-think-0.5b.json
echo "== $(date -u +%FT%TZ) done"
