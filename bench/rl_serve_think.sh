#!/usr/bin/env bash
# (issue 27) Hidden reasoning on the trained thinking model (scripts/rl_thinking.sh): serve it with budget forcing
# (think_start/think_end as trained), ask one GSM8K question without and with reveal_reasoning; prints both responses.
# Usage: bash bench/rl_serve_think.sh > bench/results/rl/serve-think-0.5b.jsonl
cd "$(dirname "$0")/.."
mkdir -p runs
SYS=$(.venv/bin/python -c "from thinkscale.prompts import THINK_SYSTEM; print(THINK_SYSTEM)")
.venv/bin/thinkscale serve --model runs/rl/grpo-0.5b-think/model.gguf --port 8123 --system-prompt "$SYS" \
  --strategy-knobs 'budget-forcing:think_start=<think>\n,think_end=</think>' --max-concurrency 2 > runs/serve-think.log 2>&1 &
PID=$!
for i in $(seq 60); do curl -sf localhost:8123/v1/models >/dev/null && break; sleep 2; done
curl -sf localhost:8123/v1/models >/dev/null || { echo "the server did not start: see runs/serve-think.log" >&2; kill $PID; exit 1; }
Q='Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?'
for reveal in false true; do
  curl -s localhost:8123/v1/chat/completions -H 'content-type: application/json' -d "{\"model\": \"model\",
    \"messages\": [{\"role\": \"user\", \"content\": \"$Q\"}],
    \"thinkscale\": {\"strategy\": \"budget-forcing\", \"params\": {\"max_thinking_tokens\": 256}, \"reveal_reasoning\": $reveal}}"
  echo
done
kill $PID
