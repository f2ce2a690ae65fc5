#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite (unit + integration on the real
# embedded model and a real llama.cpp server on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check budgetflow tests benchmarks
.venv/bin/ruff format --check budgetflow tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
