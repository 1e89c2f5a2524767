#!/usr/bin/env bash
# The project's one test command, for a fresh machine as for CI: installs what the tests need
# (Debian packages, a Python venv, the real and random models, llama.cpp's tokenizer vectors;
# each step skips what is already there), then formatting, lints, and every test of the
# workspace in release mode with the llama.cpp oracle (feature `reference`).
# Lints run first (they fail fast and share the release build with the tests: clippy uses
# --release so that llama.cpp, built by llama-cpp-sys-2's build script, is compiled once, not
# once per profile); the tests run last and their summary lines close the output.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

echo "== setup" >&2
scripts/install_deps.sh
scripts/setup_venv.sh
scripts/fetch_models.sh
scripts/make_test_models.sh
scripts/fetch_vocab_tests.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check

echo "== cargo clippy" >&2
cargo clippy --workspace --release --all-targets --features reference -- -D warnings

echo "== systemd units (systemd-analyze verify)" >&2
cargo build --release --features reference --bin lckv
cross/verify_unit.sh

echo "== cross targets (aarch64 as Pi 4 and Pi 5, armv7) under QEMU" >&2
cross/test.sh

# The kernel paths and path features the x86 tests must run (comma-separated; see
# kernels/tests/common/mod.rs): the path-iterating tests fail, naming what is missing, instead of
# passing without it. The default is what the CI machine has (AVX2, AVX-512 with VNNI); set
# LCKV_REQUIRE_PATHS to override it on another machine (empty: require nothing).
export LCKV_REQUIRE_PATHS="${LCKV_REQUIRE_PATHS-scalar,avx2,avx512,avx512-vnni}"

echo "== cargo test" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release --features reference --no-fail-fast 2>&1 | tee "$log" || status=$?

echo
echo "== summary"
grep -E '^(test result:|     Running|   Doc-tests)' "$log" || true
if [[ $status -ne 0 ]]; then
  echo "tests FAILED (cargo test exit $status)"
fi
exit "$status"
