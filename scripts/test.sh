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
python -m pytest -q "$@"
