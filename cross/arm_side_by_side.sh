#!/usr/bin/env bash
# Side-by-side cost of lckv and llama.cpp on emulated Raspberry Pi cores: executed aarch64
# instructions per generated token and per prompt token, counted by a QEMU TCG plugin under
# qemu-aarch64 -cpu cortex-a72 (Pi 4: NEON, no dotprod) and -cpu cortex-a76 (Pi 5: NEON +
# dotprod). These are instruction counts, not timings: an instruction of either program costs
# what it costs on the board (a NEON multiply-accumulate more than a move), and memory stalls,
# which bound decode on a real Pi, are not counted at all.
#
#   cross/arm_side_by_side.sh [--smoke] [MODEL_KEY ...]   keys: smollm2 gemma3 tinyllama-q4_0
#                                                          tinyllama-q8_0 (default: all present)
#
# Method. Both programs run the same GGUF file on the same prompt text (both tokenize it alike;
# the script checks that their prompt token counts agree), 1 thread, greedy (--temp 0), the
# end-of-sequence token ignored, a 256-token context, no warm-up run. Each program runs three
# times per model and core: (P1 prompt tokens, N1 generated), (P1, N2) and (P2, N1). Differences
# cancel loading, setup and exit costs:
#   instructions per generated token = (I(P1,N2) - I(P1,N1)) / (N2 - N1)
#   instructions per prompt token    = (I(P2,N1) - I(P1,N1)) / (P2 - P1)
# lckv: the aarch64 release binary (default RUSTFLAGS, as deployed: it picks its NEON or dotprod
# kernels at run time from the CPU's features, and prints which). llama.cpp: llama-completion
# from the vendored source of the llama-cpp-python sdist (scripts/llama_cpp_sdist.sh), built
# twice, with -mcpu=cortex-a72 and with -mcpu=cortex-a76+dotprod (GGML_NATIVE=OFF, no OpenMP,
# static), each run on its own core. The counting plugin is QEMU's tests/plugin/bb.c (every
# executed translation block adds its instruction count; the callback form, exact with threads),
# built from the Debian source package of the installed qemu-user against that version's
# qemu-plugin.h (apt-get source; deb-src entries are added when missing).
#
# Prints a table core x model x phase (lckv instr/token, llama.cpp instr/token, lckv/llama.cpp)
# and, last, `worst lckv/llama.cpp ratio: X.XX (core, model, phase)`: the largest ratio, lckv's
# worst case (below 1.00, lckv executes fewer instructions). Raw numbers: JSON lines in
# target/arm-side-by-side/runs.jsonl (one per run) and ratios.jsonl (one per table row).
#
# --table-only: prints the table of the runs already in runs.jsonl (no builds, no runs).
# --smoke: SmolLM2 on the A76 only (or the cores of LCKV_ARM_CORES), prompts of 8 and 16 tokens,
# 2 and 4 generated: checks that the whole chain works (under a minute once the builds are
# cached; the first run builds llama.cpp, tens of minutes on 2 cores).
#
# Builds are cached under ${LCKV_SDIST_CACHE:-~/.cache/lckv}: the plugin per QEMU version,
# llama.cpp per sdist version and flags; lckv is rebuilt by cargo (incremental) and copied to
# target/arm-side-by-side/bin, since CARGO_TARGET_DIR may be shared.
#
# Environment: LCKV_MODELS (default <repo>/models), LCKV_ARM_CORES (default "a72 a76"),
# LCKV_ARM_JOBS (runs at a time, default nproc), LCKV_BUILD_JOBS (compile jobs, default nproc),
# LCKV_ARM_TOKENS_<KEY> ("P1 P2 N1 N2", key upper-cased with - as _, overriding the defaults below).
# Needs (installed with apt-get when missing, as root): qemu-user, gcc/g++-aarch64-linux-gnu,
# libc6-dev-arm64-cross, cmake, libglib2.0-dev, pkg-config, xz-utils; and the Rust aarch64 std.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source "$repo/scripts/llama_cpp_sdist.sh"

smoke=0
table_only=0
keys=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --table-only) table_only=1 ;;
    -h | --help) sed -n "2,50p" "$0"; exit 0 ;;
    -*) echo "arm_side_by_side: unknown option '$arg'" >&2; exit 2 ;;
    *) keys+=("$arg") ;;
  esac
done

models="${LCKV_MODELS:-$repo/models}"
cache="$LLAMA_CPP_CACHE"
out="$repo/target/arm-side-by-side"
jobs="${LCKV_ARM_JOBS:-$(nproc)}"
build_jobs="${LCKV_BUILD_JOBS:-$(nproc)}"
log() { echo "arm_side_by_side: $*" >&2; }
now() { date +%s; }
t_start=$(now)

# key | file | label | P1 P2 N1 N2. QEMU runs about 0.4 G guest instructions a second here, and a
# 135M model token costs about 0.3 G, a 1.1B one several G: the 1.1B shape runs fewer tokens.
# Costs per token hardly depend on the counts at these lengths (attention's share is small).
model_table() {
  cat <<'EOF'
smollm2|SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M Q4_1|16 48 4 12
gemma3|gemma-3-270m-Q4_K_M.gguf|Gemma-3-270M Q4_K_M|16 48 4 12
tinyllama-q4_0|random/bench/tinyllama-1.1b-q4_0.gguf|TinyLlama-1.1B shape Q4_0|8 24 2 6
tinyllama-q8_0|random/bench/tinyllama-1.1b-q8_0.gguf|TinyLlama-1.1B shape Q8_0|8 24 2 6
EOF
}
cores="${LCKV_ARM_CORES:-a72 a76}"
if [[ $smoke == 1 ]]; then
  cores="${LCKV_ARM_CORES:-a76}"
  [[ ${#keys[@]} -gt 0 ]] || keys=(smollm2)
fi

# ---------------------------------------------------------------------------------------------
# Tools
if [[ $table_only == 0 ]]; then
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in qemu-user gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross cmake \
  libglib2.0-dev pkg-config xz-utils; do
  have_pkg "$p" || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "arm_side_by_side: missing packages: ${need[*]}" >&2; exit 1; }
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true

# The instruction-count plugin, built against the installed QEMU's plugin API.
qemu_src_version="$(dpkg-query -W -f='${source:Version}' qemu-user)"
qemu_upstream="${qemu_src_version#*:}"
qemu_upstream="${qemu_upstream%%+*}"
qemu_upstream="${qemu_upstream%%-*}"
plugin_dir="$cache/qemu-plugins-$qemu_src_version"
plugin="$plugin_dir/libbb.so"
if [[ ! -f "$plugin" ]]; then
  mkdir -p "$cache/qemu-src"
  orig="$(ls "$cache"/qemu-src/qemu_"${qemu_src_version#*:}"*.dsc 2>/dev/null | head -1 || true)"
  if [[ -z "$orig" ]]; then
    if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      [[ $(id -u) -eq 0 ]] || { echo "arm_side_by_side: no deb-src entries for apt-get source" >&2; exit 1; }
      log "adding deb-src entries (/etc/apt/sources.list.d/lckv-deb-src.sources)"
      cat >/etc/apt/sources.list.d/lckv-deb-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
      apt-get update -qq >&2
    fi
    log "downloading the qemu $qemu_src_version source package"
    (cd "$cache/qemu-src" && apt-get source --download-only "qemu=$qemu_src_version" >&2)
  fi
  tarball="$(ls "$cache"/qemu-src/qemu_*.orig.tar.xz | head -1)"
  top="qemu-$qemu_upstream.0"
  tar -tJf "$tarball" "$top/include/qemu/qemu-plugin.h" >/dev/null 2>&1 || top="qemu-$qemu_upstream"
  rm -rf "$plugin_dir.tmp"
  mkdir -p "$plugin_dir.tmp"
  tar -xJf "$tarball" -C "$plugin_dir.tmp" --strip-components=1 \
    "$top/include/qemu/qemu-plugin.h" "$top/tests/plugin/bb.c" "$top/tests/plugin/insn.c"
  for p in bb insn; do
    # shellcheck disable=SC2046
    gcc -O2 -shared -fPIC -I"$plugin_dir.tmp/include/qemu" $(pkg-config --cflags glib-2.0) \
      "$plugin_dir.tmp/tests/plugin/$p.c" -o "$plugin_dir.tmp/lib$p.so" $(pkg-config --libs glib-2.0)
  done
  rm -rf "$plugin_dir"
  mv "$plugin_dir.tmp" "$plugin_dir"
  log "built $plugin"
fi

# llama.cpp's llama-completion for one core (cached by sdist version and options).
build_llama() { # MCPU -> prints the binary's path
  local mcpu="$1" key dir py
  local opts=(
    -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
    -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++
    "-DCMAKE_C_FLAGS=-mcpu=$mcpu" "-DCMAKE_CXX_FLAGS=-mcpu=$mcpu"
    -DCMAKE_EXE_LINKER_FLAGS=-static -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
  )
  key="$(printf '%s\n' "${opts[@]}" | sha256sum | cut -c1-12)"
  dir="$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-aarch64-$key"
  mkdir -p "$dir/bin"
  if [[ ! -x "$dir/bin/llama-completion" ]]; then
    (
      exec 9>"$dir/.lock"
      flock 9
      [[ -x "$dir/bin/llama-completion" ]] && exit 0
      py="${LCKV_PYTHON:-}"
      if [[ -z "$py" ]]; then
        if [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"; else py=python3; fi
      fi
      fetch_llama_cpp_sdist "$py"
      if [[ ! -f "$dir/src/CMakeLists.txt" ]]; then
        rm -rf "$dir/src.tmp"
        mkdir -p "$dir/src.tmp"
        tar -xzf "$LLAMA_CPP_SDIST" -C "$dir/src.tmp" --strip-components=3 \
          "$LLAMA_CPP_SDIST_TOP/vendor/llama.cpp"
        mv "$dir/src.tmp" "$dir/src"
      fi
      log "building llama-completion for -mcpu=$mcpu in $dir"
      local start=$SECONDS
      nice -n 19 cmake -S "$dir/src" -B "$dir/build" "${opts[@]}" >&2
      nice -n 19 cmake --build "$dir/build" -j "$build_jobs" --target llama-completion >&2
      cp "$dir/build/bin/llama-completion" "$dir/bin/llama-completion.tmp"
      mv "$dir/bin/llama-completion.tmp" "$dir/bin/llama-completion"
      log "built llama-completion (-mcpu=$mcpu) in $((SECONDS - start)) s"
    ) >&2
  fi
  echo "$dir/bin/llama-completion"
}

mcpu_of() { case "$1" in a72) echo cortex-a72 ;; a76) echo cortex-a76+dotprod ;; esac; }
qcpu_of() { case "$1" in a72) echo cortex-a72 ;; a76) echo cortex-a76 ;; esac; }
mkdir -p "$out/bin" "$out/logs"
for c in $cores; do
  [[ -n "$(mcpu_of "$c")" ]] || { echo "arm_side_by_side: unknown core '$c' (a72, a76)" >&2; exit 2; }
  cp "$(build_llama "$(mcpu_of "$c")")" "$out/bin/llama-completion-$c"
done

log "building lckv for aarch64"
cargo build --release --target aarch64-unknown-linux-gnu --bin lckv >&2
cp "${CARGO_TARGET_DIR:-$repo/target}/aarch64-unknown-linux-gnu/release/lckv" "$out/bin/lckv"
commit="$(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src kernels || echo +dirty)"
t_built=$(now)

# ---------------------------------------------------------------------------------------------
# Runs
# The prompt: the first W words of a fixed English text (W chosen per model so that the prompt
# has about P tokens; each program's own count is what the per-token figures use).
text_words() {
  local w="$1" base="The old lighthouse keeper climbed the spiral stairs every evening to light \
the lamp, counting the steps as his father had taught him, and from the top he watched the \
fishing boats come home across the grey water while the gulls circled the harbour and the \
town's windows lit up one by one along the hill. He wrote the weather in a small book, the \
wind and the height of the waves, and on clear nights he named the stars for the children \
who came to visit him on Sundays with bread and news from the village below."
  local words=() i
  read -r -a words <<<"$base $base $base $base"
  for ((i = 0; i < w; i++)); do printf '%s ' "${words[i]}"; done | sed 's/ $//'
}

# run_one PROGRAM CORE KEY P N: one counted run; appends a JSON line to $out/runs.jsonl.
run_one() {
  local prog="$1" core="$2" key="$3" p="$4" n="$5" file words text logf plug cmd
  file="$(model_table | awk -F'|' -v k="$key" '$1 == k { print $2 }')"
  # Words for about p tokens: ~1.3 tokens a word in these tokenizers, plus BOS.
  words=$(( (p - 1) * 3 / 4 ))
  [[ $words -ge 1 ]] || words=1
  text="$(text_words "$words")"
  logf="$out/logs/$prog-$core-$key-p$p-n$n"
  plug="$out/logs/$prog-$core-$key-p$p-n$n.insns"
  rm -f "$plug"
  local q=(qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$(qcpu_of "$core")" -plugin "$plugin"
    -d plugin -D "$plug")
  local t0=$SECONDS
  if [[ $prog == lckv ]]; then
    "${q[@]}" "$out/bin/lckv" run -m "$models/$file" -p "$text" -n "$n" --ignore-eos --temp 0 \
      -t 1 -c 256 </dev/null >"$logf.out" 2>"$logf.err" || { log "FAILED: see $logf.err"; return 1; }
  else
    "${q[@]}" "$out/bin/llama-completion-$core" -m "$models/$file" -p "$text" -n "$n" \
      --ignore-eos --temp 0 -t 1 -tb 1 -c 256 --no-warmup -no-cnv --seed 1 \
      </dev/null >"$logf.out" 2>"$logf.err" || { log "FAILED: see $logf.err"; return 1; }
  fi
  local secs=$((SECONDS - t0)) insns ptok gen path=""
  insns="$(sed -n 's/.*insns: \([0-9]*\).*/\1/p' "$plug" | tail -1)"
  if [[ $prog == lckv ]]; then
    ptok="$(sed -n 's/^lckv: prompt \([0-9]*\) tokens.*/\1/p' "$logf.err")"
    gen="$(sed -n 's/.*generated \([0-9]*\) tokens.*/\1/p' "$logf.err")"
    path="$(sed -n 's/.*; kernels: *\([a-z0-9_]*\).*/\1/p' "$logf.err" | head -1)"
  else
    ptok="$(sed -n 's/.*prompt eval time.*\/ *\([0-9]*\) tokens.*/\1/p' "$logf.err" | head -1)"
    # llama-completion samples n tokens with --ignore-eos; its log counts decode calls ("runs").
    gen="$(sed -n 's/.* eval time.*\/ *\([0-9]*\) runs.*/\1/p' "$logf.err" | head -1)"
    if [[ -n "$gen" ]] && ((gen != n && gen + 1 != n)); then
      log "llama-completion made $gen decode calls for $n tokens ($logf.err)"
      return 1
    fi
    [[ -n "$gen" ]] && gen=$n
  fi
  if [[ -z "$insns" || -z "$ptok" || -z "$gen" ]]; then
    log "could not read the counts of $logf (insns '$insns', prompt '$ptok', generated '$gen')"
    return 1
  fi
  printf '{"program":"%s","core":"%s","model":"%s","prompt_tokens":%s,"generated":%s,"insns":%s,"seconds":%s,"kernel_path":"%s","commit":"%s"}\n' \
    "$prog" "$core" "$key" "$ptok" "$gen" "$insns" "$secs" "$path" "$commit" >>"$out/runs.jsonl"
  log "$prog $core $key p$p n$n: $insns instructions, $ptok prompt + $gen generated tokens, ${secs}s"
}

specs=()
for c in $cores; do
  while IFS='|' read -r key file label toks; do
    if [[ ${#keys[@]} -gt 0 ]]; then
      [[ " ${keys[*]} " == *" $key "* ]] || continue
    fi
    if [[ ! -f "$models/$file" ]]; then
      log "skipping $key: $models/$file is missing"
      continue
    fi
    var="LCKV_ARM_TOKENS_$(echo "$key" | tr 'a-z-' 'A-Z_')"
    toks="${!var:-$toks}"
    [[ $smoke == 1 ]] && toks="8 16 2 4"
    read -r p1 p2 n1 n2 <<<"$toks"
    for prog in lckv llama; do
      specs+=("$prog $c $key $p1 $n1" "$prog $c $key $p1 $n2" "$prog $c $key $p2 $n1")
    done
  done < <(model_table)
done
[[ ${#specs[@]} -gt 0 ]] || { echo "arm_side_by_side: nothing to run" >&2; exit 1; }

rm -f "$out/runs.jsonl" "$out/ratios.jsonl"
export -f run_one model_table text_words qcpu_of log
export out models plugin commit
log "${#specs[@]} runs, $jobs at a time"
# Longest runs first (the 1.1B models), so the parallel runs end together.
printf '%s\n' "${specs[@]}" | sort -t' ' -k3,3r -s |
  xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ || {
  echo "arm_side_by_side: some runs failed" >&2
  exit 1
}
t_ran=$(now)
log "builds $((t_built - t_start)) s, runs $((t_ran - t_built)) s; raw numbers in $out/runs.jsonl, $out/ratios.jsonl"
fi

# ---------------------------------------------------------------------------------------------
# Table
python3 - "$out" "$smoke" <<'EOF'
import json, sys
out, smoke = sys.argv[1], sys.argv[2] == "1"
labels = {"smollm2": "SmolLM2-135M Q4_1", "gemma3": "Gemma-3-270M Q4_K_M",
          "tinyllama-q4_0": "TinyLlama-1.1B shape Q4_0", "tinyllama-q8_0": "TinyLlama-1.1B shape Q8_0"}
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
by = {}
for r in runs:
    by.setdefault((r["core"], r["model"], r["program"]), []).append(r)

def per_token(rs):
    p1 = min(r["prompt_tokens"] for r in rs)
    n1 = min(r["generated"] for r in rs)
    base = [r for r in rs if r["prompt_tokens"] == p1 and r["generated"] == n1]
    dec = [r for r in rs if r["prompt_tokens"] == p1 and r["generated"] > n1]
    pro = [r for r in rs if r["prompt_tokens"] > p1 and r["generated"] == n1]
    if len(base) != 1 or len(dec) != 1 or len(pro) != 1:
        sys.exit(f"arm_side_by_side: runs do not pair up: {rs}")
    b, d, p = base[0], dec[0], pro[0]
    return {"decode": (d["insns"] - b["insns"]) / (d["generated"] - b["generated"]),
            "prompt": (p["insns"] - b["insns"]) / (p["prompt_tokens"] - b["prompt_tokens"]),
            "tokens": (b["prompt_tokens"], p["prompt_tokens"], b["generated"], d["generated"]),
            "path": b.get("kernel_path", "")}

rows = []
order = list(labels)
for core in sorted({k[0] for k in by}):
    for model in sorted({k[1] for k in by if k[0] == core}, key=order.index):
        l, g = by.get((core, model, "lckv")), by.get((core, model, "llama"))
        if not l or not g:
            continue
        pl, pg = per_token(l), per_token(g)
        if pl["tokens"] != pg["tokens"]:
            sys.exit(f"arm_side_by_side: {core} {model}: token counts differ: "
                     f"lckv {pl['tokens']}, llama.cpp {pg['tokens']}")
        for phase in ("decode", "prompt"):
            rows.append({"core": core, "model": model, "phase": phase,
                         "lckv_insns_per_token": round(pl[phase]),
                         "llama_cpp_insns_per_token": round(pg[phase]),
                         "ratio": pl[phase] / pg[phase], "tokens": pl["tokens"],
                         "lckv_kernel_path": pl["path"], "commit": runs[0]["commit"]})
with open(f"{out}/ratios.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")

print("| core | model | phase | tokens (P1/P2, N1/N2) | lckv instr/token | llama.cpp instr/token | lckv/llama.cpp |")
print("|---|---|---|---|---:|---:|---:|")
for r in rows:
    t = r["tokens"]
    toks = f"{t[0]}/{t[1]}" if r["phase"] == "prompt" else f"{t[2]}/{t[3]}"
    core = r["core"].upper() + (f" ({r['lckv_kernel_path']})" if r["lckv_kernel_path"] else "")
    print(f"| {core} | {labels[r['model']]} | {r['phase']} | {toks} | "
          f"{r['lckv_insns_per_token'] / 1e6:,.1f} M | {r['llama_cpp_insns_per_token'] / 1e6:,.1f} M | "
          f"{r['ratio']:.2f} |")
w = max(rows, key=lambda r: r["ratio"])
print(f"worst lckv/llama.cpp ratio: {w['ratio']:.2f} ({w['core'].upper()}, {labels[w['model']]}, {w['phase']})")
EOF
