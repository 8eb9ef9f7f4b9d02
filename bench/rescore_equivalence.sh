#!/usr/bin/env bash
# Behaviour unchanged across a refactor: restore every committed store twice, run `thinkscale rescore` and
# `thinkscale report` with the code at OLD (a git worktree) and with this checkout, and diff the printed tables.
#   bash bench/rescore_equivalence.sh bf3c1ae [/tmp/eq]     # exit 1 when any report differs
set -u
OLD=${1:?give the old commit}
WORK=${2:-$(mktemp -d)}
cd "$(dirname "$0")/.."
ROOT=$PWD
git worktree add -f "$WORK/old" "$OLD" -q
status=0
for side in old new; do
  src=$ROOT; [ $side = old ] && src=$WORK/old
  mkdir -p "$WORK/$side-runs" "$WORK/$side-tables"
  for dump in docs/results/stores/*.sql; do
    name=$(basename "$dump" .sql)
    run=$WORK/$side-runs/$name
    .venv/bin/python -c "from thinkscale.eval.store import load_sql; load_sql('$dump', '$run')" >/dev/null
    for cmd in rescore report; do
      extra=(); [ $cmd = report ] && extra=(--out "$run-report" --reps 200)
      # the editable install's import hook is dropped so that thinkscale is imported from $src
      .venv/bin/python -c "
import sys
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path.insert(0, '$src')
import thinkscale.cli as c
assert c.__file__.startswith('$src'), c.__file__
sys.argv = ['thinkscale'] + sys.argv[1:]
c.main()
" $cmd "$run" "${extra[@]}" > "$WORK/$side-tables/$name.$cmd" 2>&1
    done
  done
done
for f in "$WORK"/old-tables/*.report; do
  n=$(basename "$f")
  if diff -q <(grep -v "^wrote" "$f") <(grep -v "^wrote" "$WORK/new-tables/$n") >/dev/null; then
    echo "same  $n"
  else
    echo "DIFF  $n"; status=1
  fi
done
git worktree remove --force "$WORK/old"
exit $status
