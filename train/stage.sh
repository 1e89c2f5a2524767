#!/usr/bin/env bash
# Stages what the GPU machine needs in two folders, each under the 64 MiB one call carries:
#   target/stage1: lckv (release, stripped), the `gguf` Python package and the reference model
#                  class (py/), the data (data/), train/, the GGUF's first part
#   target/stage2: train/ and the GGUF's second part
# `stage.sh` stages the uptraining recipe's data (train.npy, emma); `stage.sh distill` the
# distillation's (prose_train.npy, prose_heldout.npy, heldout_prose.txt, emma). The GGUF is cut
# where the two folders come out the same size (each call also carries the tracked tree).
# Run train/prepare_data.sh and train/tokenize_data.py (and train/distill_prose.py) first; then,
# from the repository root, the stages of train/run_device.sh with STAGING=target/stage1, then
# target/stage2 (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
flow=${1:-uptrain}
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
site=$(.venv/bin/python -c 'import gguf, os; print(os.path.dirname(os.path.dirname(gguf.__file__)))')
cargo build --release --bin lckv
rm -rf target/stage1 target/stage2
mkdir -p target/stage1/bin target/stage1/py target/stage1/data target/stage2
strip -o target/stage1/bin/lckv target/release/lckv
cp -r "$site/gguf" target/stage1/py/
cp tests/reference/lckv_model.py target/stage1/py/
case $flow in
uptrain) cp train/data/train.npy train/data/emma.npy train/data/emma.txt target/stage1/data/ ;;
distill) cp train/data/prose_train.npy train/data/prose_heldout.npy train/data/heldout_prose.txt \
           train/data/emma.npy train/data/emma.txt target/stage1/data/ ;;
*) echo "stage.sh [uptrain|distill]" >&2; exit 2 ;;
esac
for s in target/stage1 target/stage2; do
  mkdir -p $s/train && cp train/*.py train/*.sh train/prompts.txt $s/train/
done
size=$(stat -L -c %s "$gguf")
s1=$(du -sb target/stage1 | cut -f1) s2=$(du -sb target/stage2 | cut -f1)
first=$(( (size + s2 - s1) / 2 ))
head -c $first "$gguf" >target/stage1/smollm2.gguf.part00
tail -c +$((first + 1)) "$gguf" >target/stage2/smollm2.gguf.part01
tree=$(git ls-files -z | grep -zv '^models-lckv/.*\.gguf$' | du -cb --files0-from=- | tail -1 | cut -f1)
for s in target/stage1 target/stage2; do
  echo "$s: $(( $(du -sb $s | cut -f1) / 1048576 )) MiB, with the tracked tree $(( ($(du -sb $s | cut -f1) + tree) / 1048576 )) MiB"
done
