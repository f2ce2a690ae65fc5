#!/usr/bin/env bash
# OptiLLM's proxy in its own environment (benchmarks/.optillm-venv), for benchmarks/server_load.py
# only: budgetflow never imports it. torch comes first from the machine's local CPU build, so
# OptiLLM's unpinned `torch` requirement installs nothing more. Idempotent; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")"
venv=".optillm-venv"
if [ ! -x "$venv/bin/optillm" ]; then
  python3 -m venv "$venv"
  {
    "$venv/bin/python" -m pip install --upgrade pip &&
    "$venv/bin/python" -m pip install "torch==2.13.0" &&
    "$venv/bin/python" -m pip install "optillm==0.4.0"
  } > "$venv/install.log" 2>&1 || { tail -n 30 "$venv/install.log"; echo "optillm_env: install failed" >&2; exit 1; }
fi
echo "$(pwd)/$venv/bin/python"
