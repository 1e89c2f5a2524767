#!/usr/bin/env bash
# lckv's side of the evaluation of one distilled model (or of the teacher): KV bytes per token,
# the five greedy answers of prompts.txt, and `lckv perplexity` on each held-out text (chunks of
# 512 tokens, second half scored). Runs on the GPU machine's CPU or here.
#   distill_lckv_eval.sh MODEL_GGUF OUT_DIR THREADS CHUNKS PREFILL TEXT...
# PREFILL: iterative (as the condensed plans were trained), sequential, or auto.
set -u
M=$1 D=$2 T=$3 CHUNKS=$4 PREFILL=$5; shift 5
BIN=${LCKV:-$(dirname "$0")/../bin/lckv}
[ -x "$BIN" ] || BIN=$(dirname "$0")/../target/release/lckv
mkdir -p "$D"
"$BIN" inspect "$M" >"$D/inspect.txt" 2>&1
i=0
while IFS= read -r line; do
  i=$((i + 1))
  mode=${line%%|*} prompt=${line#*|}
  extra=()
  [ "$mode" = chat ] && extra=(--chat)
  "$BIN" run -m "$M" -p "$prompt" -n 48 --temp 0 -t "$T" "${extra[@]}" >"$D/sample$i.txt" 2>/dev/null
done <"$(dirname "$0")/prompts.txt"
for f in "$@"; do
  name=$(basename "$f" .txt)
  "$BIN" perplexity -m "$M" -f "$f" -c 512 --chunks "$CHUNKS" --prefill "$PREFILL" -t "$T" \
    >"$D/ppl_$name.out" 2>"$D/ppl_$name.err"
done
touch "$D/done"
