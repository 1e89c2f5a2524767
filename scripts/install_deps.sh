#!/usr/bin/env bash
# Installs the Debian packages the tests need, when missing: cmake, clang and libclang-dev build
# llama.cpp (the parity oracle, via llama-cpp-sys-2); python3-venv makes the model scripts' venv;
# the aarch64 cross toolchain and qemu-user build and run the ARM tests; jq, espeak-ng and sox run
# and check examples/voice_pipeline.sh; systemd brings systemd-analyze, which checks
# cross/lckv.service. Uses sudo when not root.
set -euo pipefail
pkgs=(cmake clang libclang-dev python3-venv gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user jq espeak-ng sox systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install_deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
