#!/usr/bin/env bash
# Builds the release binaries for the boards and this machine with the `dist` profile (stripped,
# no debug info, fat LTO; see Cargo.toml), reports their sizes, and checks each one:
#   aarch64-unknown-linux-gnu      Raspberry Pi 3/4/5 with a 64-bit OS
#   armv7-unknown-linux-gnueabihf  32-bit Raspberry Pi OS
#   x86_64-unknown-linux-gnu       PCs and the CI machine (the host build)
# Each binary must be under 15 MB, answer --version, and generate under QEMU user mode (Pi 4's
# cortex-a72 and Pi 5's cortex-a76 for aarch64, cortex-a15 for armv7) the same greedy text as
# the x86-64 binary on SmolLM2. Copies go to $OUT (default: $CARGO_TARGET_DIR or target, under
# release-binaries/) as lckv-VERSION-TARGET.
# Needs an x86-64 host, the cross toolchains and qemu-user (scripts/install_deps.sh), and the
# model (scripts/fetch_models.sh). Usage: cross/release.sh [--no-run] (--no-run: build and size
# only).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

run_checks=1
[[ "${1:-}" == "--no-run" ]] && run_checks=0
[[ "$(uname -m)" == "x86_64" ]] || { echo "release.sh: run it on an x86-64 host" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
out="${OUT:-$target_dir/release-binaries}"
model="${LCKV_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
max_bytes=$((15 * 1000 * 1000))
mkdir -p "$out"

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null

targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
declare -A built
for target in "${targets[@]}"; do
  echo "== building $target" >&2
  if [[ "$target" == x86_64-unknown-linux-gnu ]]; then
    cargo build --profile dist --bin lckv
    src="$target_dir/dist/lckv"
  else
    cargo build --profile dist --bin lckv --target "$target"
    src="$target_dir/$target/dist/lckv"
  fi
  built[$target]="$out/lckv-$version-$target"
  cp "$src" "${built[$target]}"
done

echo "== sizes" >&2
status=0
for target in "${targets[@]}"; do
  bytes="$(stat -c %s "${built[$target]}")"
  awk -v t="$target" -v b="$bytes" 'BEGIN { printf "%-32s %10d bytes (%.1f MB)\n", t, b, b / 1e6 }'
  if ((bytes >= max_bytes)); then
    echo "release.sh: $target is $bytes bytes, over the 15 MB target" >&2
    status=1
  fi
done
((run_checks)) || exit "$status"

[[ -f "$model" ]] || { echo "release.sh: missing $model (scripts/fetch_models.sh)" >&2; exit 1; }
# Greedy, a short prompt and a small context: the same tokens on every ISA, in seconds under QEMU.
gen=(run -m "$model" --temp 0 -n 12 -c 256 -t 2 -p "The capital of France is")
want="$("${built[x86_64-unknown-linux-gnu]}" "${gen[@]}" 2>/dev/null)"
echo "x86-64 greedy text: $want" >&2

check() { # NAME BINARY RUNNER...
  local name="$1" bin="$2" got
  shift 2
  "$@" "$bin" --version >/dev/null || { echo "release.sh: $name: --version failed" >&2; return 1; }
  got="$("$@" "$bin" "${gen[@]}" 2>/dev/null)" || { echo "release.sh: $name: run failed" >&2; return 1; }
  if [[ "$got" != "$want" ]]; then
    printf 'release.sh: %s: the greedy text differs from x86-64:\n  %s\n  %s\n' "$name" "$got" "$want" >&2
    return 1
  fi
  echo "ok   $name: --version and the greedy text" >&2
}

check x86-64 "${built[x86_64-unknown-linux-gnu]}" env || status=1
for cpu in cortex-a72 cortex-a76; do
  check "aarch64 ($cpu)" "${built[aarch64-unknown-linux-gnu]}" \
    qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" || status=1
done
check "armv7 (cortex-a15)" "${built[armv7-unknown-linux-gnueabihf]}" \
  qemu-arm -L /usr/arm-linux-gnueabihf -cpu cortex-a15 || status=1
exit "$status"
