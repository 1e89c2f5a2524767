#!/usr/bin/env bash
# Generates the random-weight GGUF models the tests use, into ${LCKV_MODELS:-<repo>/models}/random/.
#
# Tokenizer: SmolLM2's, truncated to its first 8192 tokens (random/vocab-smollm2-8k.gguf, also a
# vocab-only fixture), so real prompts tokenize while embeddings stay small.
# Standard set (tests; also random/bench/tinyllama-1.1b-q4_0.gguf, 620 MB):
#   {llama,phi3,qwen2,gemma3}-tiny-f32.gguf     every architecture, f32
#   phi3-tiny-q4_0, qwen2-tiny-q8_0, gemma3-tiny-q4_k   one quantized type per architecture
#   llama-tiny-{f16,q8_0,q4_0,q4_1,q5_0,q4_k,q6_k}.gguf  every supported type on llama
#   llama3-tiny-f32.gguf                        llama with Llama-3.1 rope_freqs
#   llama-lckv-{0_3_3_3,0_2_2_3,0_0_2_2}-f32.gguf, llama-lckv-0_3_3_3-q4_0.gguf  KV plans
#   gemma3-lckv-0_5_5_5_5_5-f32.gguf            a KV plan on an architecture with SWA
# --bench adds random/bench/: tinyllama-1.1b-{q4_0,q8_0,q4_k}.gguf, phi3-mini-q4_0.gguf (~5 GB,
# several minutes; speed does not depend on the weights' values).
#
# Idempotent: models are regenerated only when missing or when the generator changed (a stamp
# holds the sha256 of the two scripts). Needs scripts/setup_venv.sh and scripts/fetch_models.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${LCKV_MODELS:-$repo/models}"
out="$models/random"
python="$repo/.venv/bin/python"
gen="$repo/scripts/make_random_gguf.py"
smollm2="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
vocab="$out/vocab-smollm2-8k.gguf"

bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "make_test_models: unknown option '$arg' (expected --bench)" >&2; exit 2 ;;
  esac
done

[[ -x "$python" ]] || { echo "make_test_models: no venv at $repo/.venv: run scripts/setup_venv.sh" >&2; exit 1; }
[[ -f "$smollm2" ]] || { echo "make_test_models: $smollm2 is missing: run scripts/fetch_models.sh" >&2; exit 1; }

mkdir -p "$out"
stamp="$out/.generator.sha256"
want="$(cat "$gen" "$0" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "make_test_models: generator changed: regenerating $out" >&2
  find "$out" -name '*.gguf' -delete
fi
# Each model is written atomically, so an interrupted run resumes where it stopped.
echo "$want" >"$stamp"

# gen_model FILE ARGS...: generates FILE unless it is already there (writes are atomic).
gen_model() {
  local file="$1"
  shift
  [[ -f "$file" ]] && return 0
  "$python" "$gen" "$@" -o "$file"
}

gen_model "$vocab" --arch llama --vocab-only --vocab-from "$smollm2" --vocab-size 8192
v=(--vocab-from "$vocab")

for arch in llama phi3 qwen2 gemma3; do
  gen_model "$out/$arch-tiny-f32.gguf" --arch "$arch" --type f32 --seed 1 "${v[@]}"
done
gen_model "$out/phi3-tiny-q4_0.gguf" --arch phi3 --type q4_0 --seed 1 "${v[@]}"
gen_model "$out/qwen2-tiny-q8_0.gguf" --arch qwen2 --type q8_0 --seed 1 "${v[@]}"
gen_model "$out/gemma3-tiny-q4_k.gguf" --arch gemma3 --type q4_k --seed 1 "${v[@]}"
for t in f16 q8_0 q4_0 q4_1 q5_0 q4_k q6_k; do
  gen_model "$out/llama-tiny-$t.gguf" --arch llama --type "$t" --seed 1 "${v[@]}"
done
gen_model "$out/llama3-tiny-f32.gguf" --arch llama --llama3-rope --type f32 --seed 2 "${v[@]}"
for plan in 0_3_3_3 0_2_2_3 0_0_2_2; do
  gen_model "$out/llama-lckv-$plan-f32.gguf" --arch llama --kv-plan "$plan" --type f32 --seed 3 "${v[@]}"
done
gen_model "$out/llama-lckv-0_3_3_3-q4_0.gguf" --arch llama --kv-plan 0_3_3_3 --type q4_0 --seed 3 "${v[@]}"
gen_model "$out/gemma3-lckv-0_5_5_5_5_5-f32.gguf" --arch gemma3 --kv-plan 0_5_5_5_5_5 --type f32 \
  --seed 3 "${v[@]}"

# The TinyLlama-shape Q4_0 model is also in the standard set: tests/memory_budget.rs uses it.
mkdir -p "$out/bench"
gen_model "$out/bench/tinyllama-1.1b-q4_0.gguf" --arch llama --shape tinyllama-1.1b --type q4_0 \
  --seed 4 --vocab-from "$smollm2"

if [[ $bench == 1 ]]; then
  for t in q8_0 q4_k; do
    gen_model "$out/bench/tinyllama-1.1b-$t.gguf" --arch llama --shape tinyllama-1.1b --type "$t" \
      --seed 4 --vocab-from "$smollm2"
  done
  gen_model "$out/bench/phi3-mini-q4_0.gguf" --arch phi3 --shape phi3-mini --type q4_0 --seed 4 \
    --vocab-from "$smollm2"
fi

echo "make_test_models: models are in $out" >&2
