#!/usr/bin/env bash
# Creates <repo>/.venv with the Python packages the scripts and tests need, at pinned versions:
# `gguf` (llama.cpp's own GGUF reader/writer, used by make_random_gguf.py) and `numpy`, so that
# the random test models are the same bytes on every machine; `openai` and `ollama`, the real
# client libraries that tests/serve_clients.rs drives `lckv serve` with. Idempotent: a venv that
# already has the pinned versions is left alone.
#
# env: PYTHON (interpreter that creates the venv, default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"
pins=("gguf==0.19.0" "numpy==2.4.6" "openai==3.51.0" "ollama==0.6.3")

have_pins() {
  "$venv/bin/python" - "${pins[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
import gguf, numpy, openai, ollama  # noqa: F401  (the packages must also import, not just be recorded)
EOF
}

if [[ -x "$venv/bin/python" ]] && have_pins; then
  echo "setup_venv: $venv is ready" >&2
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv" ||
    { echo "setup_venv: '$python -m venv' failed: install python3-venv" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "${pins[@]}"
have_pins || { echo "setup_venv: $venv does not import ${pins[*]} after install" >&2; exit 1; }
echo "setup_venv: $venv is ready" >&2
