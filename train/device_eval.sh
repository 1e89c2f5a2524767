#!/usr/bin/env bash
# lckv's side of the evaluation of one trained plan (CPU, on the GPU machine, in the background):
# float32 GGUF conversion, KV bytes per token, greedy answers, its Q4_0 file's longest context in
# 512 MiB and prompt/generation speed, iterative-prefill perplexity.
#   device_eval.sh RUN_DIR LCKV_BIN SMOLLM2_GGUF EMMA_TXT THREADS CHUNKS
set -u
D=$1 BIN=$2 G=$3 EMMA=$4 T=${5:-12} CHUNKS=${6:-40}
"$BIN" convert "$D/hf" -o "$D/model.f32.gguf" --type f32 --vocab-from "$G" >"$D/convert.log" 2>&1 || exit 1
"$BIN" inspect "$D/model.f32.gguf" >"$D/inspect.txt" 2>&1
i=0
while IFS= read -r line; do
  i=$((i + 1))
  mode=${line%%|*} prompt=${line#*|}
  extra=()
  [ "$mode" = chat ] && extra=(--chat)
  "$BIN" run -m "$D/model.f32.gguf" -p "$prompt" -n 48 --temp 0 -t "$T" "${extra[@]}" >"$D/sample$i.txt" 2>/dev/null
done <"$(dirname "$0")/prompts.txt"
# The size a board would run: Q4_0, as shipped. Speed on 4 threads, the fit with lckv's own plan.
"$BIN" quantize "$D/model.f32.gguf" "$D/model.q4_0.gguf" q4_0 >"$D/quantize.log" 2>&1
"$BIN" inspect "$D/model.q4_0.gguf" --mem-budget 512M --ctx-limit 1000000 >"$D/fit512.txt" 2>&1
"$BIN" bench -m "$D/model.q4_0.gguf" -p 128 -n 64 --threads-list 4 --json >"$D/bench.jsonl" 2>"$D/bench.err"
"$BIN" perplexity -m "$D/model.f32.gguf" -f "$EMMA" -c 512 --chunks "$CHUNKS" --prefill iterative -t "$T" \
  >"$D/ppl.out" 2>"$D/ppl.err"
touch "$D/eval.done"
