#!/usr/bin/env bash
# Install with the test tools, then run the default test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
.venv/bin/python -m ruff check thinkscale tests bench
.venv/bin/python -m mypy
.venv/bin/lint-imports --no-cache   # the package's layers ([tool.importlinter] in pyproject.toml)
.venv/bin/python scripts/check_function_length.py   # no function in thinkscale/ over 100 lines
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests (exit 5): nothing was checked"; exit 0
fi
exit "$rc"
