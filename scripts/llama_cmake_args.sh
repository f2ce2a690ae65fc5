#!/usr/bin/env bash
# Print the CMAKE_ARGS that build llama.cpp for this x86 CPU's extensions, AMX left out (prints
# nothing elsewhere: llama.cpp's native default). Used by setup.sh.
set -euo pipefail
cpu="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
has() { for flag in "$@"; do [[ " $cpu " == *" $flag "* ]] || return 1; done; }
has avx2 fma f16c || exit 0
args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
has bmi2 && args+=" -DGGML_BMI2=ON"
has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
  args+=" -DGGML_AVX512=ON"
  has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
fi
echo "$args"
