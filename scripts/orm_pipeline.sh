#!/usr/bin/env bash
# (issue 26) resumable: restore the stores first (scripts/stores.py restore); results go to runs/orm/.
# The ORM measurements on qwen2.5-coder-0.5b, one heavy job at a time; every step resumes from the feature cache.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/orm
C=runs/orm/features-0.5b.sqlite
TS=".venv/bin/thinkscale"
PY=.venv/bin/python
step() { echo "== $(date -u +%FT%TZ) $*"; "$@"; }
step $TS train orm --run runs/train-0.5b --samples 8 --out runs/orm/orm-train8.json \
    --curve runs/orm/curve-train8.json --cache $C --threads 2 --n-ctx 2048
step $PY bench/orm_select.py runs/gsm8k-qwen0.5b --orm runs/orm/orm-train8.json --train-run runs/train-0.5b \
    --train-samples 8 --cache $C --threads 2 --out runs/orm/select-train8.json
step $TS train orm --run runs/train-0.5b --samples 16 --out runs/orm/orm-train16.json \
    --curve runs/orm/curve-train16.json --cache $C --threads 2 --n-ctx 2048
step $PY bench/orm_select.py runs/gsm8k-qwen0.5b --orm runs/orm/orm-train16.json --train-run runs/train-0.5b \
    --cache $C --threads 2 --out runs/orm/select-train16.json
echo "== $(date -u +%FT%TZ) done"
