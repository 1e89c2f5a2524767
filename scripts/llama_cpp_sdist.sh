# The llama-cpp-python source distribution from PyPI, which vendors llama.cpp (its source tree
# under vendor/llama.cpp, with the tokenizer test vocabularies). Sourced, not run, by
# scripts/fetch_vocab_tests.sh and scripts/build_llama_cpp.sh:
#
#   source scripts/llama_cpp_sdist.sh
#   fetch_llama_cpp_sdist PYTHON   # downloads it with PYTHON's pip unless already there
#   tar -xzf "$LLAMA_CPP_SDIST" ...  # top directory: $LLAMA_CPP_SDIST_TOP
#
# Environment: LCKV_SDIST_CACHE, where the sdist is kept (default ${XDG_CACHE_HOME:-~/.cache}/lckv).
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_CACHE="${LCKV_SDIST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lckv}"
LLAMA_CPP_SDIST="$LLAMA_CPP_CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
LLAMA_CPP_SDIST_TOP="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"

fetch_llama_cpp_sdist() {
  local py="${1:-python3}"
  mkdir -p "$LLAMA_CPP_CACHE"
  if [ ! -s "$LLAMA_CPP_SDIST" ]; then
    echo "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist into $LLAMA_CPP_CACHE" >&2
    "$py" -m pip download --no-deps --no-binary :all: -d "$LLAMA_CPP_CACHE" \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
  fi
}
