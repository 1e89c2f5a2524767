#!/usr/bin/env bash
# Cross-compiles lckv for the boards and runs the kernel and model tests under QEMU:
#   aarch64 with -cpu cortex-a72 (Raspberry Pi 4: NEON, no dotprod) and -cpu cortex-a76
#   (Raspberry Pi 5: NEON + dotprod), then armv7 (portable kernels).
# The tests run are those that need no downloaded model: the kernels crate (every path the
# emulated CPU has, against the scalar twins) and the model tests on the committed LCKV fixtures.
# Each run sets LCKV_REQUIRE_PATHS to the paths its CPU model provides, so that the kernel tests
# fail rather than pass without NEON or dotprod (on armv7 there is only the scalar path).
# Needs: gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf
# libc6-dev-armhf-cross qemu-user (scripts/install_deps.sh) and the Rust std for both targets.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null

run_tests() { # TARGET RUNNER REQUIRED_PATHS
  local target="$1" runner="$2" required="$3" var
  var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUNNER"
  echo "== $target under: $runner (required paths: $required)" >&2
  env "$var=$runner" LCKV_REQUIRE_PATHS="$required" \
    cargo test --release --target "$target" -p lckv-kernels
  env "$var=$runner" LCKV_REQUIRE_PATHS="$required" \
    cargo test --release --target "$target" -p lckv --lib --test lckv_fixtures
}

run_tests aarch64-unknown-linux-gnu "qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72" \
  scalar,neon
run_tests aarch64-unknown-linux-gnu "qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a76" \
  scalar,neon,dotprod
run_tests armv7-unknown-linux-gnueabihf "qemu-arm -L /usr/arm-linux-gnueabihf -cpu cortex-a15" \
  scalar
echo "== release binaries" >&2
cargo build --release --target aarch64-unknown-linux-gnu --bin lckv
cargo build --release --target armv7-unknown-linux-gnueabihf --bin lckv
target_dir="${CARGO_TARGET_DIR:-target}"
ls -l "$target_dir/aarch64-unknown-linux-gnu/release/lckv" \
  "$target_dir/armv7-unknown-linux-gnueabihf/release/lckv"
