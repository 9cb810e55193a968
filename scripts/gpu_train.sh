#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the repository root, after scripts/gpu_pack.sh:
# trains the candidate settings side by side on the one GPU for the same wall time, exports
# each best model as fp16 safetensors, and packs models, logs and sample grids into
# <= 16 MB pieces: the first four under $OUT, any others for scripts/gpu_fetch_rest.sh.
#   MINUTES=7 scripts/gpu_train.sh                    # both candidates side by side
#   MINUTES=8 CANDIDATES=pixel scripts/gpu_train.sh   # one candidate gets the whole GPU
# Environment: MINUTES (training time), CANDIDATES ("pixel effnet"), BATCH (32), SIZE (256),
# LAYERS (7), WIDTH (64), WORKERS (data workers per candidate: the cores left over, shared),
# VAL_EVERY (500), SMOKE_STEPS (5; 0 skips the smoke run), INIT (weights to start from; default:
# the path in .gpu/init_path, else .gpu/init/model.safetensors, as scripts/gpu_pack.sh left),
# EXTRA (more core.train arguments for every candidate, e.g. "--finetune"), MASK_REUSE (4:
# samples per generated mask, see core.data; 4 makes a sample 2.2x cheaper on the CPU), OUT, RUNS.
# Batch 32 with mask reuse 4 (run 3, one H200) trained at 1,003 images/s, waiting for data 1 %
# of the time; run 2 (batch 16, reuse 1) at 471. Both waited for the GPU once per step (the
# NaN check); the trainer's staged check that avoids this has not run on a GPU yet.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
minutes=${MINUTES:-7}
batch=${BATCH:-32}
size=${SIZE:-256}
layers=${LAYERS:-7}
width=${WIDTH:-64}
read -r -a candidates <<< "${CANDIDATES:-pixel effnet}"
[ ${#candidates[@]} -gt 0 ] || { echo "CANDIDATES is empty"; exit 2; }
cores=$(nproc)
workers=${WORKERS:-$(( (cores - 2) / ${#candidates[@]} > 1 ? (cores - 2) / ${#candidates[@]} : 1 ))}
out=${OUT:-/tmp/gpu_out}
runs=${RUNS:-/tmp/gpu_runs}
init_file=${INIT:-}
if [ -z "$init_file" ] && [ -f .gpu/init_path ]; then init_file=$(cat .gpu/init_path); fi
if [ -z "$init_file" ] && [ -f .gpu/init/model.safetensors ]; then
  init_file=.gpu/init/model.safetensors
fi
init=()
if [ -n "$init_file" ]; then
  [ -f "$init_file" ] || { echo "INIT $init_file does not exist"; exit 2; }
  init=(--init "$init_file")
fi
read -r -a extra_args <<< "${EXTRA:-}"
common=(--data .gpu/data/train --val-data .gpu/data/val --image-size "$size" --layers "$layers"
        --width "$width" --batch-size "$batch" --workers "$workers" --preload --log-every 200
        --save-every 0 --seed 0 --channels-last --mask-reuse "${MASK_REUSE:-4}"
        "${init[@]}" "${extra_args[@]}")
smoke_common=()
for arg in "${common[@]}"; do [ "$arg" = "--compile" ] || smoke_common+=("$arg"); done
declare -A extra=(
  [pixel]="--perceptual none"
  [effnet]="--perceptual effnet-lite0 --backbone-weights .gpu/effnet-lite0.pth"
)
for name in "${candidates[@]}"; do
  [ -n "${extra[$name]:-}" ] || { echo "unknown candidate '$name' (known: ${!extra[*]})"; exit 2; }
done
mkdir -p "$runs"
echo "candidates: ${candidates[*]}; $workers data workers each; $minutes min; init ${init_file:-none}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
# 1. smoke: every candidate runs a few steps, so a broken setting fails in seconds.
smoke_steps=${SMOKE_STEPS:-5}
[[ $smoke_steps =~ ^[0-9]+$ ]] || { echo "SMOKE_STEPS must be a whole number, got '$smoke_steps'"; exit 2; }
smoke_steps=$(( 10#$smoke_steps ))  # "00" is 0 too
[ "$smoke_steps" -eq 0 ] || for name in "${candidates[@]}"; do
  # (without --compile: a smoke run would spend the budget compiling what the run compiles)
  python3 -m core.train "${smoke_common[@]}" ${extra[$name]} --out "$runs/smoke-$name" \
    --max-steps "$smoke_steps" --val-every 0 --workers 2 > "$runs-smoke-$name.log" 2>&1 \
    || { echo "smoke $name FAILED"; tail -30 "$runs-smoke-$name.log"; exit 1; }
  echo "smoke $name ok"
done
# 2. the candidates side by side for the same wall time.
pids=()
for name in "${candidates[@]}"; do
  python3 -m core.train "${common[@]}" ${extra[$name]} --out "$runs/$name" \
    --max-steps 10000000 --max-minutes "$minutes" --val-every "${VAL_EVERY:-500}" \
    --export "$runs/$name/model.safetensors" > "$runs/$name.log" 2>&1 &
  pids+=($!)
done
smi=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 60 > "$runs/gpu_util.csv" &
  smi=$!
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ -n "$smi" ] && kill "$smi" 2>/dev/null
for name in "${candidates[@]}"; do
  echo "== $name"; grep -E "^training|^done|^exported|^error" "$runs/$name.log"
  grep -E "^val step" "$runs/$name/log.txt" | tail -4
  grep -E "^step" "$runs/$name/log.txt" | tail -1
done
# 3. pack: models, logs, last sample grid of each run.
rm -rf /tmp/pack /tmp/results.tar /tmp/results.tar.part-*  # nothing stale from an earlier run
mkdir -p "$out" /tmp/pack
for name in "${candidates[@]}"; do
  mkdir -p "/tmp/pack/$name"
  cp "$runs/$name/model.safetensors" "$runs/$name/log.txt" "$runs/$name.log" "/tmp/pack/$name/" 2>/dev/null
  last=$(ls "$runs/$name/samples" 2>/dev/null | tail -1)
  [ -n "$last" ] && cp "$runs/$name/samples/$last" "/tmp/pack/$name/samples_last.png"
done
cp "$runs/gpu_util.csv" /tmp/pack/ 2>/dev/null
tar -C /tmp/pack -cf /tmp/results.tar .
# Only 64 MiB come back from one call: the first 64 MB now, the rest with a second call on the
# still-warm machine: `bash scripts/gpu_fetch_rest.sh` (then cat all parts in order | tar x).
split -b 16000000 -d -a 2 /tmp/results.tar /tmp/results.tar.part-
mv /tmp/results.tar.part-0[0-3] "$out/" 2>/dev/null
ls -la "$out"; ls /tmp/results.tar.part-* 2>/dev/null && echo "MORE PARTS: run scripts/gpu_fetch_rest.sh now"
exit $status
