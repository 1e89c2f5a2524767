#!/usr/bin/env bash
# Builds llama.cpp programs (default: llama-server) from the llama.cpp source vendored in the
# llama-cpp-python sdist (scripts/llama_cpp_sdist.sh), for this CPU: the portable x86 baseline
# plus the ggml options of scripts/ggml_cpu_features.sh, the same set scripts/side_by_side.sh
# gives llama.cpp. Offline once the sdist is cached: no HTTPS, no Web UI download or npm build
# (the server then embeds no Web UI; its HTTP API is all there). Static binaries, release build.
#
#   scripts/build_llama_cpp.sh [TARGET ...]    e.g. llama-server llama-bench
#
# Prints the path of each binary on stdout, one a line; progress goes to stderr. Binaries are
# cached in $LLAMA_CPP_CACHE/llama.cpp-<version>-<options hash>/bin (the cache directory of
# scripts/llama_cpp_sdist.sh, LCKV_SDIST_CACHE), so a second run builds nothing; the build tree
# stays beside them, so a new target only compiles what it adds. Builds run under nice.
#
# Environment: LCKV_BUILD_JOBS (parallel compile jobs, default nproc), LCKV_PYTHON (a Python with
# pip, used only to download the sdist; default <repo>/.venv/bin/python, else python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/llama_cpp_sdist.sh"
source "$repo/scripts/ggml_cpu_features.sh"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-server)

opts=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
)
for opt in $(ggml_cpu_features); do opts+=("-D$opt=ON"); done

key="$(printf '%s\n' "${opts[@]}" | sha256sum | cut -c1-12)"
dir="$LLAMA_CPP_CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-$key"
mkdir -p "$dir/bin"
exec 9>"$dir/.lock"
flock 9  # one build of this tree at a time

missing=()
for t in "${targets[@]}"; do
  [ -x "$dir/bin/$t" ] || missing+=("$t")
done

if [ ${#missing[@]} -gt 0 ]; then
  py="${LCKV_PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py=python3; fi
  fi
  fetch_llama_cpp_sdist "$py"
  if [ ! -f "$dir/src/CMakeLists.txt" ]; then
    echo "build_llama_cpp: extracting llama.cpp into $dir/src" >&2
    rm -rf "$dir/src.tmp"
    mkdir -p "$dir/src.tmp"
    tar -xzf "$LLAMA_CPP_SDIST" -C "$dir/src.tmp" --strip-components=3 \
      "$LLAMA_CPP_SDIST_TOP/vendor/llama.cpp"
    mv "$dir/src.tmp" "$dir/src"
  fi
  echo "build_llama_cpp: cmake ${opts[*]}" >&2
  start=$SECONDS
  nice -n 19 cmake -S "$dir/src" -B "$dir/build" "${opts[@]}" >&2
  nice -n 19 cmake --build "$dir/build" --config Release -j "${LCKV_BUILD_JOBS:-$(nproc)}" \
    --target "${missing[@]}" >&2
  for t in "${missing[@]}"; do
    if [ ! -x "$dir/build/bin/$t" ]; then
      echo "build_llama_cpp: error: $dir/build/bin/$t was not built" >&2
      exit 1
    fi
    cp "$dir/build/bin/$t" "$dir/bin/$t.tmp"
    mv "$dir/bin/$t.tmp" "$dir/bin/$t"
  done
  echo "build_llama_cpp: built ${missing[*]} in $((SECONDS - start)) s" >&2
fi

for t in "${targets[@]}"; do echo "$dir/bin/$t"; done
