#!/usr/bin/env bash
# (issue 27) GRPO on the default model and its comparison with the base, resumable: rerun after a kill and every step
# goes on from where it stopped (train grpo --resume from its newest checkpoint; eval resumes its store).
# Needs: bash scripts/install.sh --train, and the committed stores (scripts/stores.py restore: runs/train-0.5b picks
# the training problems, runs/gsm8k-qwen0.5b is the base model's test run). The run is kept in git by
# `stores.py save-rl` (its final adapter; commit docs/results/stores/rl/): restored on a new machine, the model is
# re-exported from it instead of trained again. A session that must stop mid-training keeps its newest checkpoint the
# same way (`stores.py save-rl runs/rl/grpo-0.5b-boxed`, then commit), and this script resumes from it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rl_lib.sh
OUT=runs/rl/grpo-0.5b-boxed
STEPS=${STEPS:-200}
$PY scripts/stores.py restore
# The eval datasets' own prompt (boxed): the trained model is then evaluated exactly as the base model was.
args=(--model qwen2.5-coder-0.5b --data gsm8k-train --system boxed --rewards correct --problems-from runs/train-0.5b
      --heldout 32 --num-generations 4 --max-completion-tokens 384 --steps "$STEPS" --save-every 5 --eval-every 25
      --generation llamacpp --out "$OUT")
train_or_export "$OUT" "${args[@]}"
step $PY scripts/stores.py save-rl "$OUT"
step $TS eval --config docs/results/rl/sweep-grpo-0.5b.toml --out runs/gsm8k-grpo-0.5b --quiet
step $PY bench/rl_compare.py runs/gsm8k-qwen0.5b runs/gsm8k-grpo-0.5b --strategy greedy:1 \
    --strategy self-consistency:8 --out bench/results/rl/compare-grpo-0.5b.json
# the control: the base written through the same export (the file type alone moves greedy accuracy by points)
[ -f "$OUT/model-0.gguf" ] || step $TS train export "$OUT" --checkpoint 0
step $TS eval --config docs/results/rl/sweep-grpo-0.5b-base.toml --out runs/gsm8k-grpo-0.5b-base --quiet
step $PY bench/rl_compare.py runs/gsm8k-grpo-0.5b-base runs/gsm8k-grpo-0.5b --strategy greedy:1 \
    --strategy self-consistency:8 --out bench/results/rl/compare-grpo-0.5b-vs-export-base.json
echo "== $(date -u +%FT%TZ) done"
