#!/usr/bin/env bash
# Serving benchmark, side by side: `lckv serve` and llama.cpp's `llama-server` on the same GGUF
# file, the same context per slot and the same thread count. For each client count N (default
# 1 2 4 8) it starts llama-server with N slots, then lckv serve with N sessions, one after the
# other; waits for GET /health; runs scripts/serve_bench.py against it (N concurrent streaming
# chat clients, REQUESTS each, MAX_TOKENS each, temperature 0); records the server's peak RSS
# (VmHWM); stops it with SIGTERM. Prints a markdown table (aggregate tok/s, ratio, TTFT median
# and p95, peak RSS) and the 8-client over 1-client rate; the raw JSON lines go to RESULTS.
#
#   scripts/serve_bench.sh [MODEL.gguf]
#   ONLY=llama scripts/serve_bench.sh     # llama-server alone (ONLY=lckv: lckv alone)
#
# Default model: ${LCKV_MODELS:-models}/SmolLM2-135M-Instruct.Q4_1.gguf. llama-server is built
# once and cached by scripts/build_llama_cpp.sh; lckv by `cargo build --release` (both niced).
#
# Server command lines (slot context CTX for both; llama-server's -c is the total context,
# split evenly across its -np slots when the KV cache is not unified, which --no-kv-unified
# makes sure of; the script checks the slot size llama-server logs):
#   llama-server -m MODEL -np N -c N*CTX --no-kv-unified -t THREADS --host 127.0.0.1 --port P
#   lckv serve   -m MODEL --parallel N -c CTX -t THREADS --host 127.0.0.1 --port Q
#
# Environment (defaults in brackets):
#   CLIENTS [1 2 4 8]   THREADS [2]   CTX [2048]   MAX_TOKENS [128]   REQUESTS [3] per client
#   ONLY [both]: llama or lckv      RESULTS [target/serve-bench/results-<time>.jsonl]
#   LLAMA_SERVER, LCKV_BIN          binaries to use instead of building them
#   LLAMA_SERVER_ARGS, LCKV_SERVE_ARGS   extra arguments for each server
#   LLAMA_PORT [18080], LCKV_PORT [18081], HEALTH_TIMEOUT [180] s, REQUEST_TIMEOUT [600] s
#   LCKV_BUILD_JOBS                 compile jobs for both builds
# Needs curl and python3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

model="${1:-${LCKV_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
clients="${CLIENTS:-1 2 4 8}"
threads="${THREADS:-2}"
ctx="${CTX:-2048}"
max_tokens="${MAX_TOKENS:-128}"
requests="${REQUESTS:-3}"
only="${ONLY:-}"
health_timeout="${HEALTH_TIMEOUT:-180}"
request_timeout="${REQUEST_TIMEOUT:-600}"
llama_port="${LLAMA_PORT:-18080}"
lckv_port="${LCKV_PORT:-18081}"
outdir="$repo/target/serve-bench"
results="${RESULTS:-$outdir/results-$(date +%Y%m%d-%H%M%S).jsonl}"

die() { echo "serve_bench: error: $*" >&2; exit 1; }
log() { echo "serve_bench: $*" >&2; }

case "$only" in
  "") sides=(llama lckv) ;;
  llama) sides=(llama) ;;
  lckv) sides=(lckv) ;;
  *) die "ONLY must be llama, lckv or empty, not '$only'" ;;
esac
[ -f "$model" ] || die "model file not found: $model"
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
mkdir -p "$outdir" "$(dirname "$results")"
: > "$results"

server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do  # up to 10 s, then SIGKILL
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      log "server $server_pid ignored SIGTERM for 10 s; killing it"
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

for side in "${sides[@]}"; do
  case "$side" in
    llama)
      if [ -z "${LLAMA_SERVER:-}" ]; then
        LLAMA_SERVER="$(scripts/build_llama_cpp.sh llama-server)"
      fi
      [ -x "$LLAMA_SERVER" ] || die "llama-server not executable: $LLAMA_SERVER"
      ;;
    lckv)
      if [ -z "${LCKV_BIN:-}" ]; then
        log "building lckv (cargo build --release)"
        nice -n 19 cargo build --release --bin lckv ${LCKV_BUILD_JOBS:+-j "$LCKV_BUILD_JOBS"} >&2
        LCKV_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/lckv"
      fi
      [ -x "$LCKV_BIN" ] || die "lckv not executable: $LCKV_BIN"
      "$LCKV_BIN" serve --help >/dev/null 2>&1 || die "$LCKV_BIN has no 'serve' command (run with ONLY=llama)"
      ;;
  esac
done

# Starts one server in the background (server_pid), waits until GET /health answers 200.
start_server() { # NAME PORT LOGFILE CMD...
  local name="$1" port="$2" logf="$3"
  shift 3
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/health"; then
    die "something already answers on port $port; set LLAMA_PORT / LCKV_PORT"
  fi
  log "starting $name: $*"
  "$@" >"$logf" 2>&1 &
  server_pid=$!
  local deadline=$((SECONDS + health_timeout)) code
  while :; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2 || true
      server_pid=""
      die "$name exited before becoming healthy (log: $logf)"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health" || true)"
    [ "$code" = 200 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$logf" >&2 || true
      die "$name not healthy after ${health_timeout} s (last /health status: ${code:-none}; log: $logf)"
    fi
    sleep 0.5
  done
}

model_name="$(basename "$model" .gguf)"
log "model $model, ctx $ctx per slot, $threads threads, clients: $clients, $requests requests of $max_tokens tokens each"
log "results: $results"

for n in $clients; do
  for side in "${sides[@]}"; do
    case "$side" in
      llama)
        name=llama-server port="$llama_port"
        # shellcheck disable=SC2206 # extra arguments split on spaces on purpose
        cmd=("$LLAMA_SERVER" -m "$model" -np "$n" -c $((n * ctx)) --no-kv-unified -t "$threads"
             --host 127.0.0.1 --port "$port" ${LLAMA_SERVER_ARGS:-})
        ;;
      lckv)
        name=lckv port="$lckv_port"
        # shellcheck disable=SC2206
        cmd=("$LCKV_BIN" serve -m "$model" --parallel "$n" -c "$ctx" -t "$threads"
             --host 127.0.0.1 --port "$port" ${LCKV_SERVE_ARGS:-})
        ;;
    esac
    logf="$outdir/$name-np$n.log"
    start_server "$name" "$port" "$logf" "${cmd[@]}"
    if [ "$side" = llama ]; then
      slot="$(grep -o 'n_ctx_slot = [0-9]*' "$logf" | head -n1 | grep -o '[0-9]*$' || true)"
      [ "$slot" = "$ctx" ] || die "llama-server slot context is '${slot:-unknown}', not $ctx (log: $logf)"
    fi
    meta="$(python3 -c 'import json, sys; print(json.dumps({"server": sys.argv[1], "threads": int(sys.argv[2]), "ctx_per_slot": int(sys.argv[3]), "model_file": sys.argv[4], "cmd": sys.argv[5:]}))' \
      "$name" "$threads" "$ctx" "$model" "${cmd[@]}")"
    log "$name, $n clients: benchmarking"
    if ! line="$(python3 scripts/serve_bench.py --url "http://127.0.0.1:$port" --model "$model_name" \
        --clients "$n" --requests "$requests" --max-tokens "$max_tokens" \
        --timeout "$request_timeout" --server-pid "$server_pid" --meta "$meta")"; then
      echo "$line" >>"$results"
      die "$name, $n clients: requests failed: $line (server log: $logf)"
    fi
    echo "$line" >>"$results"
    echo "$line"
    stop_server
  done
done

echo
python3 scripts/serve_bench.py --table "$results"
echo
echo "raw results: $results"
