#!/usr/bin/env bash
# Run the test suite (and the linters) in .venv, creating it on a fresh clone.
#   ./scripts/test.sh              # everything
#   ./scripts/test.sh -k capture   # extra arguments go to pytest
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
echo "== ruff check" >&2
ruff check interp tests scripts
echo "== ruff format --check" >&2
ruff format --check interp tests scripts
echo "== lint-imports (the import contract in pyproject.toml)" >&2
lint-imports --no-cache
echo "== pytest" >&2
# one worker per core (INTERP_TEST_WORKERS overrides; 0 runs in this process), each test file
# on one worker so that its module fixtures are built once
workers=${INTERP_TEST_WORKERS:-$(python -c "import os; print(min(4, len(os.sched_getaffinity(0))))")}
if [ "$workers" -gt 1 ]; then
  python -m pytest -q -n "$workers" --dist loadfile "$@"
else
  python -m pytest -q "$@"
fi
