#!/usr/bin/env bash
# The GPU machine's side of the recipe, one stage per call (the weights need two calls to arrive;
# state lives in /tmp while the machine is held). Run from the repository root:
#   bash <staging>/train/run_device.sh STAGE STAGING_DIR
# Stages: recv1 | recv2 (reassemble, setup, check, bench, untrained baseline, standard) |
#         plan NAME... | ship [PLAN] (quantize PLAN, else the best LCKV plan; hand back parts) |
#         long PLAN STEPS [NAME] (reassemble, setup, train one plan for STEPS, then ship it) | collect
set -uo pipefail
STAGE=$1 STG=$2
W=/tmp/dw R=/tmp/run
mkdir -p $W $R "$OUT"
cp -r "$STG"/. $W/ 2>/dev/null
export PYTHONPATH=$W/py PYTHONUNBUFFERED=1
PY="python3 $W/train/train_lckv.py"
BIN=$W/bin/lckv G=$W/smollm2.gguf
# Iterative prefill costs m + b passes on the CPU: condensed plans are scored on fewer chunks.
bg_eval() {
  local n=40; case $1 in lckv-*|sandwich-*) n=${LCKV_CHUNKS:-12} ;; esac
  setsid nohup flock /tmp/eval.lock bash $W/train/device_eval.sh "$R/$1" $BIN $G $W/data/emma.txt 12 $n >/dev/null 2>&1 &
}
train() { # name plan steps
  $PY train --weights $W/smollm2.pt --data $W/data --plan "$2" --steps "$3" --out "$R/$1" 2>&1 | tee -a "$OUT/train.log" && bg_eval "$1"
}
case $STAGE in
recv1)
  nvidia-smi -L; python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'
  ls -la $W $W/bin; nproc ;;
recv2|long)
  if [ -f $W/smollm2.gguf.part00 ] && [ -f $W/smollm2.gguf.part01 ]; then cat $W/smollm2.gguf.part* >$G && rm -f $W/smollm2.gguf.part*; fi
  sha256sum $G
  [ -f $W/smollm2.pt ] || $PY setup --gguf $G --out $W/smollm2.pt || exit 1
  if [ "$STAGE" = long ]; then
    train "${5:-$3}" "$3" "$4" && exec bash "$0" ship "$STG" "${5:-$3}"
    exit 1
  fi
  $PY check --weights $W/smollm2.pt --lckv $BIN --gguf $G --work $R/check 2>&1 | tee "$OUT/check.log" || exit 1
  $PY bench --weights $W/smollm2.pt --data $W/data --budget "${BUDGET:-840}" --out $W/steps.json 2>&1 | tee "$OUT/bench.log" || exit 1
  S=$(python3 -c "import json; print(json.load(open('$W/steps.json'))['steps'])")
  train baseline standard 0
  train standard standard "$S" ;;
plan)
  S=$(python3 -c "import json; print(json.load(open('$W/steps.json'))['steps'])")
  for p in "${@:3}"; do train "$p" "$p" "$S"; done ;;
ship)
  best=${3:-}
  [ -n "$best" ] || best=$(python3 -c "
import json
r = {p: json.load(open('$R/' + p + '/torch.json'))['torch_eval']['ppl'] for p in ('lckv-w2', 'sandwich-middle')}
print(min(r, key=r.get))")
  echo "best LCKV plan: $best"; echo "$best" >$W/best.txt
  $BIN convert "$R/$best/hf" -o $W/ship.f32.gguf --type f32 --vocab-from $G >/dev/null 2>&1
  $BIN quantize $W/ship.f32.gguf $W/ship.gguf q4_0 >/dev/null && ls -la $W/ship.gguf && sha256sum $W/ship.gguf | tee "$OUT/ship.sha256"
  $BIN run -m $W/ship.gguf -p "What is the capital of France?" --chat -n 48 --temp 0 -t 4 >"$OUT/ship_sample.txt" 2>/dev/null
  (cd $W && split -b 15M -d ship.gguf ship.part)
  for f in $W/ship.part0[0-3]; do [ -f "$f" ] && cp "$f" "$OUT/"; done ;;
collect)
  # every trained run's lckv evaluation, or WAIT x 5 s
  runs=$(ls $R/*/torch.json 2>/dev/null | wc -l)
  for i in $(seq 1 "${WAIT:-60}"); do n=$(ls $R/*/eval.done 2>/dev/null | wc -l); [ "$n" -ge "$runs" ] && break; sleep 5; done
  python3 $W/train/collect.py $R "$OUT"
  cp $W/steps.json $R/check/check.json "$OUT/" 2>/dev/null
  for f in $W/ship.part0[4-9]; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  for p in $R/*/; do tail -c 400 "$p/ppl.err" 2>/dev/null; echo " <- $p"; done
  sha256sum $R/*/model.q4_0.gguf ;;
esac
echo "== lckv evaluations so far"; for p in $R/*/; do [ -f "$p/ppl.out" ] && echo "$p: $(cat $p/ppl.out)"; done; true
