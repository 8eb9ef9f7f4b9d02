# Sourced by the rl scripts (scripts/rl_pipeline.sh, scripts/rl_thinking.sh), from the repository root: the tools,
# a logged step, and the one rule for a GRPO run folder. Not run on its own.
TS=.venv/bin/thinkscale
PY=.venv/bin/python
step() { echo "== $(date -u +%FT%TZ) $*"; "$@"; }
# train_or_export OUT TRAIN_ARGS...: a run with its final adapter (trained, or restored from git by `stores.py
# restore`) is only exported again when OUT/model.gguf is missing; a started run resumes from its newest checkpoint;
# else the training starts. TRAIN_ARGS are `train grpo`'s, --out OUT among them.
train_or_export() {
  local out=$1
  shift
  if [ -f "$out/adapter/adapter_model.safetensors" ]; then
    [ -f "$out/model.gguf" ] || step $TS train export "$out" --out "$out/model.gguf"
  elif [ -f "$out/settings.json" ]; then step $TS train grpo "$@" --resume
  else step $TS train grpo "$@"; fi
}
