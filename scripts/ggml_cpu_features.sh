# The ggml build options for the x86 features this CPU has beyond ggml's portable defaults
# (AVX2, FMA, F16C, BMI2), so llama.cpp uses everything the CPU offers, as its own native build
# would. Sourced, not run, by scripts/side_by_side.sh (which exports each option for
# llama-cpp-sys-2) and scripts/build_llama_cpp.sh (which passes each one to cmake):
#
#   source scripts/ggml_cpu_features.sh
#   for opt in $(ggml_cpu_features); do ...; done   # one option name a line, e.g. GGML_AVX512
#
# Prints nothing off x86_64.
ggml_cpu_features() {
  [[ "$(uname -m)" == x86_64 ]] || return 0
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { [[ "$flags" == *" $1 "* ]]; }
  if has avx512f && has avx512cd && has avx512vl && has avx512dq && has avx512bw; then
    echo GGML_AVX512
    if has avx512vbmi; then echo GGML_AVX512_VBMI; fi
    if has avx512_vnni; then echo GGML_AVX512_VNNI; fi
    if has avx512_bf16; then echo GGML_AVX512_BF16; fi
  fi
  if has avx_vnni; then echo GGML_AVX_VNNI; fi
  if has amx_tile; then echo GGML_AMX_TILE; fi
  if has amx_int8; then echo GGML_AMX_INT8; fi
  if has amx_bf16; then echo GGML_AMX_BF16; fi
  unset -f has
}
