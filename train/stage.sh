#!/usr/bin/env bash
# Stages what the GPU machine needs in two folders, each under the 64 MiB one call carries:
#   target/stage1: lckv (release, stripped), the `gguf` Python package and the reference model
#                  class (py/), the tokenized data and emma.txt (data/), train/, the GGUF's first half
#   target/stage2: train/ and the GGUF's second half
# Run train/prepare_data.sh and train/tokenize_data.py first; then, from the repository root, the
# stages of train/run_device.sh with STAGING=target/stage1, then target/stage2 (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
site=$(.venv/bin/python -c 'import gguf, os; print(os.path.dirname(os.path.dirname(gguf.__file__)))')
cargo build --release --bin lckv
rm -rf target/stage1 target/stage2
mkdir -p target/stage1/bin target/stage1/py target/stage1/data target/stage2
strip -o target/stage1/bin/lckv target/release/lckv
cp -r "$site/gguf" target/stage1/py/
cp tests/reference/lckv_model.py target/stage1/py/
cp train/data/train.npy train/data/emma.npy train/data/emma.txt target/stage1/data/
for s in target/stage1 target/stage2; do
  mkdir -p $s/train && cp train/*.py train/*.sh train/prompts.txt $s/train/
done
# The first call also carries lckv, the data and the tracked tree: its half is the smaller.
first=45000000
head -c $first "$gguf" >target/stage1/smollm2.gguf.part00
tail -c +$((first + 1)) "$gguf" >target/stage2/smollm2.gguf.part01
du -sh target/stage1 target/stage2
