#!/usr/bin/env bash
# Checks cross/lckv.service and cross/lckv.socket with `systemd-analyze verify`, on temporary
# copies whose ExecStart names the built binary (verify refuses a unit whose binary is missing)
# and the test model. verify exits 0 on an unknown key or an unreadable value (it only warns), so
# any output at all fails the check; a copy with a misspelled key must fail it too, which
# proves the check can fail. Usage: cross/verify_unit.sh [LCKV_BINARY] (default: the release
# build in $CARGO_TARGET_DIR or target/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/release/lckv}")"
model="${LCKV_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
[[ -x "$bin" ]] || { echo "verify_unit: no lckv binary at $bin (cargo build --release)" >&2; exit 1; }

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed -e "s#/usr/local/bin/lckv#$bin#" -e "s#/opt/lckv/model.gguf#$model#" \
  "$repo/cross/lckv.service" >"$dir/lckv.service"
cp "$repo/cross/lckv.socket" "$dir/lckv.socket"

verify() { # UNIT... : fails on a non-zero exit or any message
  local out
  out="$(systemd-analyze verify "$@" 2>&1)" || { echo "$out" >&2; return 1; }
  [[ -z "$out" ]] || { echo "$out" >&2; return 1; }
}

verify "$dir/lckv.service" "$dir/lckv.socket"
echo "verify_unit: lckv.service and lckv.socket verified against $bin" >&2

mkdir "$dir/broken"
sed 's/^WatchdogSec=/WatchdogSek=/' "$dir/lckv.service" >"$dir/broken/lckv.service"
if verify "$dir/broken/lckv.service" 2>/dev/null; then
  echo "verify_unit: a unit with a misspelled key passed: this check no longer catches errors" >&2
  exit 1
fi
