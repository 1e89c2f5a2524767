#!/usr/bin/env bash
# The GPU machine's side of the recipe, one stage per call (the weights need two calls to arrive;
# state lives in /tmp while the machine is held). Run from the repository root:
#   bash <staging>/train/run_device.sh STAGE STAGING_DIR
# Stages: recv1 | recv2 (reassemble, setup, check, bench, untrained baseline, standard) |
#         plan NAME... | ship [PLAN] (quantize PLAN, else the best LCKV plan; hand back parts) |
#         long PLAN STEPS [NAME] (reassemble, setup, train one plan for STEPS, then ship it) | collect
# Distillation (distill.py; every long step runs in the background, so keep one call running,
# e.g. `status`, or the machine goes back 30 s after the last call ends):
#   gen [SECONDS]              reassemble, setup, then teacher data in the background ($R/gen)
#   distill PLAN [SECONDS]     in the background, once gen is done: distill PLAN, evaluate,
#                              Q4_0 file in 15 MiB parts, then lckv's CPU evaluation of it
#   status [WAIT]              waits up to WAIT s (default 540) for the background jobs; logs to $OUT
#   ship distill-PLAN          parts 0-3 of the Q4_0 file (the uptraining stage, run dir distill-PLAN)
#   dcollect PLAN [WAIT]       waits for lckv's evaluation; results tarball, logs, parts 4+
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
PYD="python3 $W/train/distill.py --weights $W/smollm2.pt ${DISTILL_GLOBAL:-}"  # DISTILL_GLOBAL: e.g. --layers 6 --device cpu for a dry run
TEXTS="$R/gen/heldout_answers.txt $W/data/heldout_prose.txt $W/data/emma.txt"
reassemble() {
  if [ -f $W/smollm2.gguf.part00 ] && [ -f $W/smollm2.gguf.part01 ]; then cat $W/smollm2.gguf.part* >$G && rm -f $W/smollm2.gguf.part*; fi
  sha256sum $G
  [ -f $W/smollm2.pt ] || $PY setup --gguf $G --out $W/smollm2.pt
}
background() { # name command...: runs detached, logs to $R/name.log, leaves $R/name.done or .failed
  local name=$1; shift
  rm -f "$R/$name.done" "$R/$name.failed"
  setsid nohup bash -c '"$@" && touch "'"$R/$name.done"'" || touch "'"$R/$name.failed"'"' _ "$@" >"$R/$name.log" 2>&1 </dev/null &
  echo $! >"$R/$name.pid"; echo "started $name (pid $!), log $R/$name.log"
}
wait_for() { # file: waits until it exists (0) or a .failed twin appears (1)
  while [ ! -f "$1.done" ]; do [ -f "$1.failed" ] && return 1; sleep 5; done
}
case $STAGE in
gen)
  reassemble || exit 1
  background gen $PYD gen --gguf $G --out $R/gen --seconds "${3:-270}" --batch "${GEN_BATCH:-4096}" \
    --max-new "${GEN_MAX_NEW:-320}" ${GEN_ARGS:-} ;;
distill)
  background "distill-$3" bash $W/train/run_device.sh _distill "$STG" "$3" "${4:-780}" ;;
_distill) # run by `distill` in the background
  P=$3 D=$R/distill-$3
  wait_for $R/gen || { echo "gen failed"; exit 1; }
  # lckv's CPU evaluation of the teacher itself, beside the training (same texts, same chunks).
  [ -d $R/teacher-lckv ] || setsid nohup nice -n 10 bash $W/train/distill_lckv_eval.sh $G $R/teacher-lckv 6 \
    "${LCKV_CHUNKS:-12}" auto $TEXTS >/dev/null 2>&1 </dev/null &
  $PYD distill --gen $R/gen --prose $W/data/prose_train.npy --plan "$P" --out $D --seconds "$4" ${DISTILL_ARGS:-} || exit 1
  $PYD evaluate --hf $D/hf --gen $R/gen --data $W/data --out $D/eval.json ${EVAL_ARGS:-} || exit 1
  $BIN convert $D/hf -o $D/model.f32.gguf --type f32 --vocab-from $G >/dev/null || exit 1
  $BIN quantize $D/model.f32.gguf $D/model.q4_0.gguf q4_0 >/dev/null || exit 1
  sha256sum $D/model.q4_0.gguf | tee $D/q4_0.sha256
  (cd $D && split -b 15M -d model.q4_0.gguf part)
  bash $W/train/distill_lckv_eval.sh $D/model.q4_0.gguf $D/lckv 12 "${LCKV_CHUNKS:-12}" iterative $TEXTS ;;
status)
  for i in $(seq 1 $(( ${3:-540} / 5 ))); do
    busy=0; for f in $R/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && busy=1; done
    [ $busy = 0 ] && break; sleep 5
  done
  for f in $R/*.log; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  for f in $R/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 6 "$f"; }; done
  ls $R/*.done $R/*.failed 2>/dev/null; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
dcollect)
  D=$R/distill-$3
  for i in $(seq 1 $(( ${4:-300} / 5 ))); do [ -f $D/lckv/done ] && [ -f $R/teacher-lckv/done ] && break; sleep 5; done
  (cd $R && tar czf "$OUT/distill-$3-results.tgz" distill-$3/train.json distill-$3/eval.json distill-$3/q4_0.sha256 \
    distill-$3/lckv teacher-lckv gen/gen.json gen/heldout_answers.txt ./*.log 2>/dev/null)
  for f in $D/part0[4-9]; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  cat $D/eval.json 2>/dev/null | head -40; cat $D/lckv/*.out $R/teacher-lckv/*.out 2>/dev/null ;;
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
  if [ -f "$R/$best/part00" ]; then  # a distillation run: already quantized and cut
    for f in "$R/$best"/part0[0-3]; do cp "$f" "$OUT/"; done; cat "$R/$best/q4_0.sha256"; exit 0
  fi
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
