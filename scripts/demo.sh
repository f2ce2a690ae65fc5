#!/usr/bin/env bash
# Set up (first run builds llama.cpp bindings) and run the main job on the embedded model:
# greedy vs self-consistency over 8 samples on 50 built-in arithmetic questions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/budgetflow eval --dataset chain_sum --limit 50 -s single -s vote@8 --output results/demo.json "$@"
