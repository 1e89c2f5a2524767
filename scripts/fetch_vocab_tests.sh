#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors (ggml-vocab-*.gguf with .inp/.out) from the
# llama-cpp-python sdist on PyPI and dumps every vocabulary's tokenizer.* fields to JSON, so the
# Rust tests need no GGUF reader. Real models (*.gguf) in the models directory are dumped too.
#
#   scripts/fetch_vocab_tests.sh
#
# Environment:
#   LCKV_MODELS        models directory (default <repo>/models); output goes to $LCKV_MODELS/vocab
#   LCKV_SDIST_CACHE   where the sdist is kept (default ${XDG_CACHE_HOME:-~/.cache}/lckv)
#   LCKV_PYTHON        a Python with the `gguf` package (default <repo>/.venv/bin/python, else python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/llama_cpp_sdist.sh"
MODELS="${LCKV_MODELS:-$REPO/models}"
DEST="$MODELS/vocab"
PY="${LCKV_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
if ! "$PY" -c 'import gguf' 2>/dev/null; then
    echo "error: $PY cannot import the 'gguf' package; pip install gguf, or set LCKV_PYTHON" >&2
    exit 1
fi

mkdir -p "$DEST"
fetch_llama_cpp_sdist "$PY"

echo "extracting vocab test files into $DEST"
tar -xzf "$LLAMA_CPP_SDIST" -C "$DEST" --strip-components=4 --wildcards \
    "$LLAMA_CPP_SDIST_TOP/vendor/llama.cpp/models/ggml-vocab-*"

dump() { # dump GGUF JSON (skipped when the JSON is newer than the GGUF)
    [ "$2" -nt "$1" ] && return 0
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
from gguf import GGUFReader, GGUFValueType

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)

def value(f):
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        if f.types[1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]

keys = {
    "model": "tokenizer.ggml.model", "pre": "tokenizer.ggml.pre",
    "tokens": "tokenizer.ggml.tokens", "scores": "tokenizer.ggml.scores",
    "token_types": "tokenizer.ggml.token_type", "merges": "tokenizer.ggml.merges",
    "bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
    "eot": "tokenizer.ggml.eot_token_id", "eom": "tokenizer.ggml.eom_token_id",
    "unk": "tokenizer.ggml.unknown_token_id", "pad": "tokenizer.ggml.padding_token_id",
    "add_bos": "tokenizer.ggml.add_bos_token", "add_eos": "tokenizer.ggml.add_eos_token",
    "add_space_prefix": "tokenizer.ggml.add_space_prefix",
}
out = {k: value(r.fields[g]) for k, g in keys.items() if g in r.fields}
with open(dst, "w", encoding="utf-8") as fh:
    json.dump(out, fh, ensure_ascii=False)
EOF
}

for g in "$DEST"/ggml-vocab-*.gguf; do
    [ -e "$g.inp" ] || continue  # only vocabularies with test vectors
    dump "$g" "${g%.gguf}.json"
done
for g in "$MODELS"/*.gguf; do
    [ -e "$g" ] || continue
    name="$(basename "${g%.gguf}")"
    echo "dumping the vocabulary of $name"
    dump "$g" "$DEST/$name.json"
done
echo "done: $(ls "$DEST"/*.json | wc -l) vocabularies in $DEST"
