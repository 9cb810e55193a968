#!/usr/bin/env bash
# One device call that does both GPU jobs a session has: the issue #6 benchmark (time-capped;
# its JSON is written row by row, so a cut-off run still reports) and then the training run of
# scripts/gpu_train.sh for the time left before DEADLINE. Prepare with scripts/gpu_pack.sh
# [INIT]; run with carry [".gpu"] and a timeout of 600 s:
#   OUT=$OUT CANDIDATES=pixel bash scripts/gpu_session.sh
# Environment: BENCH_SECONDS (75; eager and CUDA-graph inference and training rows; 0 skips
# them), BENCH_COMPILE_SECONDS (45; torch.compile'd inference rows; 0 skips them), MINUTES
# (training minutes; default and upper bound: what is left before DEADLINE after RESERVE
# seconds for start-up, smoke run, export and packing; 0 skips training), DEADLINE (seconds
# since start, 570), RESERVE (100), BENCH_DEVICE (cuda), BENCH_VARIANTS,
# BENCH_COMPILE_VARIANTS, BENCH_COMPILE_PARTS (inference; "training" measures compiled
# training steps of both networks), BENCH_TRAIN (256x16); the rest goes to gpu_train.sh
# (EXTRA="--compile" trains through torch.compile).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out=${OUT:?OUT must be set}
bench_seconds=${BENCH_SECONDS:-75}
compile_seconds=${BENCH_COMPILE_SECONDS:-45}
deadline=${DEADLINE:-570}
reserve=${RESERVE:-100}
for name in bench_seconds compile_seconds deadline reserve; do
  [[ ${!name} =~ ^[0-9]+$ ]] || { echo "$name must be whole seconds, got '${!name}'"; exit 2; }
done
if [ -n "${MINUTES:-}" ] && ! [[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "MINUTES must be a number of minutes, got '$MINUTES'"; exit 2
fi
mkdir -p "$out"
bench() {  # bench CAP JSON VARIANTS PARTS: one time-capped run of bench/speed.py
  echo "== benchmark $3 ($4; at most $1 s)"
  timeout -k 20 --signal=INT "$1" python3 bench/speed.py \
    --device "${BENCH_DEVICE:-cuda}" --sizes 256,512 --variants "$3" --parts "$4" \
    --train-sizes "${BENCH_TRAIN:-256x16}" --repeats 20 --train-repeats 5 --json "$out/$2" 2>&1 \
    | grep --line-buffered -v "^W[0-9]"
  echo "benchmark exit ${PIPESTATUS[0]} (124/130: cut at the time cap; rows so far are in $2)"
}
# Eager and CUDA-graph rows first (quick), then the compiled ones, whose compilation takes
# most of their cap: a slow compile cannot starve the eager rows of their time.
if [ "$bench_seconds" -gt 0 ]; then
  bench "$bench_seconds" speed_cuda.json \
    "${BENCH_VARIANTS:-fp32,bf16-cl,fp32-graph,bf16-cl-graph,fp32-up,bf16-cl-graph-up}" inference,training
fi
if [ "$compile_seconds" -gt 0 ]; then
  bench "$compile_seconds" speed_cuda_compile.json \
    "${BENCH_COMPILE_VARIANTS:-fp32-compile-graph,bf16-cl-compile-graph}" \
    "${BENCH_COMPILE_PARTS:-inference}"
fi
left=$(( deadline - SECONDS - reserve ))
minutes=$(awk -v left="$left" -v want="${MINUTES:-}" 'BEGIN {
  m = left / 60; if (want != "" && want + 0 < m) m = want + 0; if (m < 0) m = 0; printf "%.2f", m }')
if awk "BEGIN { exit !($minutes > 0) }"; then
  echo "== training ($minutes min; $SECONDS s used so far)"
  MINUTES=$minutes OUT=$out bash scripts/gpu_train.sh
else
  echo "== no time left for training (MINUTES=${MINUTES:-unset}, $SECONDS s used)"
fi
