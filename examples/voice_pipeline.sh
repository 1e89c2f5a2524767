#!/usr/bin/env bash
# Text in, speech out: each non-empty input line is a user's turn in one conversation; `lckv pipe`
# answers it, and every sentence is spoken by espeak-ng into its own WAV file (out/001.wav, ...)
# the moment the sentence is finished, while the model writes the next one. A speech recogniser
# writing lines takes the place of the text input in a real pipeline.
#
#   examples/voice_pipeline.sh [FILE]          # lines from FILE, or from stdin
#
# Environment: MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf), OUT (default out),
# LCKV (default: target/release/lckv if built, else lckv on PATH), LCKV_ARGS (more pipe flags,
# e.g. "--system 'Answer briefly.' -n 64"). Needs jq and espeak-ng (scripts/install_deps.sh).
set -euo pipefail

model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
out=${OUT:-out}
lckv=${LCKV:-$( [[ -x target/release/lckv ]] && echo target/release/lckv || echo lckv )}
for tool in jq espeak-ng; do
  command -v "$tool" >/dev/null || { echo "voice_pipeline: $tool is missing (scripts/install_deps.sh)" >&2; exit 1; }
done
mkdir -p "$out"

# Lines -> requests: {"id": N, "conversation": "voice", "messages": [{"role": "user", ...}]}.
requests() {
  jq --unbuffered -R -c 'select(test("\\S")) | {id: input_line_number, conversation: "voice",
     messages: [{role: "user", content: .}]}' "$@"
}

# Events -> speech. Token events are dropped here; a display would show them as they come.
speak() {
  local n=0 event
  while IFS= read -r event; do
    case $(jq -r .event <<<"$event") in
      sentence)
        n=$((n + 1))
        local wav text
        wav=$(printf '%s/%03d.wav' "$out" "$n")
        text=$(jq -r .text <<<"$event")
        espeak-ng -w "$wav" --stdin <<<"$text"
        echo "$wav: $text"
        ;;
      done) jq -r '"request \(.id): \(.generated_tokens) tokens, first after \(.ttft_ms|floor) ms, \(.finish_reason)"' <<<"$event" >&2 ;;
      error) jq -r '"lckv pipe: \(.message)"' <<<"$event" >&2 ;;
    esac
  done
}

# shellcheck disable=SC2086 # LCKV_ARGS is split into flags on purpose
requests "$@" \
  | "$lckv" pipe -m "$model" ${LCKV_ARGS:-} 2>"$out/lckv.log" \
  | jq --unbuffered -c 'select(.event != "token")' \
  | speak
