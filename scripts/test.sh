#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite (unit + integration on the real
# embedded model, a real llama.cpp server and a real PostgreSQL server on 127.0.0.1, and the
# trace page in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/test_services.sh
# the tests that need PostgreSQL or Chromium fail, rather than skip, when they are missing
export BUDGETFLOW_REQUIRE_SERVICES=1
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
