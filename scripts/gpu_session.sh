#!/usr/bin/env bash
# One device call that does both GPU jobs a session has: the issue #6 benchmark (time-capped,
# its JSON is written row by row, so a cut-off run still reports) and then the training run of
# scripts/gpu_train.sh for the minutes left. Prepare with scripts/gpu_pack.sh [INIT]; run with
# carry [".gpu"] and a timeout of 600 s:
#   OUT=$OUT BENCH_SECONDS=150 MINUTES=6 CANDIDATES=pixel bash scripts/gpu_session.sh
# BENCH_SECONDS=0 skips the benchmark; MINUTES=0 skips training.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out=${OUT:?OUT must be set}
bench_seconds=${BENCH_SECONDS:-150}
minutes=${MINUTES:-6}
mkdir -p "$out"
if [ "$bench_seconds" -gt 0 ]; then
  echo "== benchmark (at most $bench_seconds s)"
  timeout --signal=INT "$bench_seconds" python3 bench/speed.py --device "${BENCH_DEVICE:-cuda}" --sizes 256,512 \
    --variants "${BENCH_VARIANTS:-fp32,bf16,fp32-graph,bf16-graph,fp32-compile-graph,bf16-compile-graph}" \
    --parts inference,training --train-sizes "${BENCH_TRAIN:-256x16}" --repeats 20 \
    --train-repeats 5 --json "$out/speed_cuda.json" 2>&1 | grep -v "^W[0-9]"
  echo "benchmark exit ${PIPESTATUS[0]} (124/130: cut at the time cap; rows so far are in the JSON)"
fi
if awk "BEGIN { exit !($minutes > 0) }"; then
  echo "== training ($minutes min)"
  MINUTES=$minutes OUT=$out bash scripts/gpu_train.sh
fi
