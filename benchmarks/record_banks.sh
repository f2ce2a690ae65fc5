#!/usr/bin/env bash
# Record the sample banks behind benchmarks/policies.py on the embedded model (SmolLM2-135M):
# four reasoning-gym families at three temperatures, 16 samples + one greedy answer per item,
# every answer scored by the likelihood verifier. About 4-6 minutes a bank on 2 cores.
#   bash benchmarks/record_banks.sh [OUT_DIR] [SEED] [NAME ...]
# OUT_DIR defaults to results/banks, SEED to 1 (it picks the dataset's items, their few-shot
# examples and the sampling seeds); NAMEs record only those banks. Existing banks are kept.
# Sibling banks, the same families with other items, for calibrating on a split of the same
# family (benchmarks/policies.py --siblings):
#   bash benchmarks/record_banks.sh results/banks-seed2 2
set -euo pipefail
out="${1:-results/banks}"
seed="${2:-1}"
only=("${@:3}")
mkdir -p "$out"
record() {  # NAME DATASET TEMPERATURE LIMIT
  local path="$out/$1.jsonl"
  if [[ ${#only[@]} -gt 0 && ! " ${only[*]} " =~ " $1 " ]]; then return; fi
  if [[ -f "$path" ]]; then echo "kept $path"; return; fi
  budgetflow bank record --dataset "$2" --temperature "$3" --limit "$4" --seed "$seed" --k 16 \
    --max-tokens 32 --threads 2 --verify --output "$path"
}
record arith_mix-t0.5 arith_mix 0.5 120
record products-t0.7 "rg:products:max_digits=1" 0.7 120
record gcd-t1.0 "rg:gcd:max_value=30" 1.0 120
record letter_counting-t0.5 "rg:letter_counting:min_words=2,max_words=4" 0.5 120
record multiply-t1.0 'rg:basic_arithmetic:min_terms=2,max_terms=2,max_digits=1,operators=["*"]' 1.0 120
