#!/usr/bin/env bash
# Every GPU measurement in launch/BENCHMARKS.md, in one run of about 13
# minutes on one H100/H200 (device time is scarce; nothing here needs a
# second try):
#   1. `dada-jax bench`, paper config, bf16, batch 64, side by side with the
#      PyTorch reference's step (same batch, same card), with `--profile`:
#      the time by op class of both steps;
#   2. the paper's global batch 192 in bf16, and fp32 at batch 64, on one
#      card, the critic rematerialised saving conv/matmul outputs
#      (train.remat_policy=dots_saveable);
#   3. `dada-jax sim2real --protocol joint` on the denoising task, 3 seeds
#      as 3 processes: restorer and critic trained together from scratch,
#      as the paper trains, with the go/no-go check, the control and DDA
#      (SIM2REAL=0 skips it).
#
#   launch/gpu_benchmarks.sh OUT [NOISE_DA_CHECKOUT]
#
# OUT receives bench_{bf16,bf16_192,fp32}.json, profile_tables.md,
# sim2real's results.{json,md}, psnr_vs_step.png, comparison.png, and
# logs.tgz (every log and per-seed run).
#
# SMALL=1 rehearses the same plumbing with test-size models on a CPU.
set -u -o pipefail
OUT=${1:?usage: launch/gpu_benchmarks.sh OUT [NOISE_DA_CHECKOUT]}
REF=${2:-}
W=$(mktemp -d)
mkdir -p "$OUT" "$W/sim2real" "$W/logs"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
# sim2real's branches and seeds compile the same steps: compile each once.
export JAX_COMPILATION_CACHE_DIR="$W/jax_cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
DADA="python3 -m dada_jax.cli"

if [[ ${SMALL:-0} == 1 ]]; then
  BENCH_CFG="configs/denoise.py:runlocal" BATCH=8 SIZE=32 SIDES=64 STEPS=2
  BIG_BATCH=16
  S2R=(--config configs/demo.py:runlocal --protocol joint --steps 3
       --eval-every 3 --probe-batches 1 --no-gate
       --methods vanilla,oracle,dda,control)
  T_BENCH=300 T_S2R=300 T_BIG=120
else
  BENCH_CFG="configs/denoise.py" BATCH=64 SIZE=128 SIDES=512,2048 STEPS=10
  BIG_BATCH=192
  # configs/demo.py's networks (restorer depth 3 / width 16, critic inner 32,
  # mults 1-2), batch 8 of 64 px, lr 5e-4: 2500 updates per method, α ramped
  # over the first 30%, 4 methods per process. The rendered patches are made
  # on the host's CPUs, which bound the step rate here, not the card.
  S2R=(--protocol joint --steps 2500 --ramp-fraction 0.3 --eval-every 500
       --config.optim.lr=5e-4 --methods vanilla,oracle,dda,control)
  T_BENCH=220 T_S2R=270 T_BIG=150
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax',
jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
jax.devices())"
  python3 -c "import torch; print('torch', torch.__version__)" || true
} > "$W/logs/environment.txt" 2>&1

ref_flags=()
if [[ -n $REF && ${SMALL:-0} == 1 ]]; then
  ref_flags=(--torch-reference "$REF" --torch-small --torch-device cpu)
elif [[ -n $REF ]]; then
  ref_flags=(--torch-reference "$REF" --torch-device cuda --torch-amp)
fi
timeout "$T_BENCH" $DADA bench --config "$BENCH_CFG" --batch $BATCH \
  --size $SIZE --modes dda,vanilla --dtypes bfloat16 --restore-sizes $SIDES \
  --steps $STEPS --warmup 2 --peak-tflops 989 "${ref_flags[@]}" \
  --json "$W/bench_bf16.json" --profile "$W/profile" \
  > "$W/logs/bench_bf16.log" 2>&1
echo "bench bf16: exit $?"
sed -n '/^where the time goes/,/^| cores used/p' "$W/logs/bench_bf16.log" \
  > "$W/profile_tables.md"

REMAT=(--config.train.remat=True --config.train.remat_policy=dots_saveable)
for case in "bf16_192 bfloat16 $BIG_BATCH" "fp32 float32 $BATCH"; do
  read -r name dtype batch <<< "$case"
  timeout "$T_BIG" $DADA bench --config "$BENCH_CFG" "${REMAT[@]}" \
    --batch "$batch" --size $SIZE --modes dda --dtypes "$dtype" \
    --restore-sizes '' --steps $STEPS --warmup 2 --peak-tflops 989 \
    --json "$W/bench_$name.json" > "$W/logs/bench_$name.log" 2>&1
  echo "bench $name: exit $?"
done

for seed in $([[ ${SIM2REAL:-1} == 1 ]] && echo 0 1 2); do
  timeout "$T_S2R" $DADA sim2real --task denoise --seeds "$seed," "${S2R[@]}" \
    --output "$W/sim2real" > "$W/logs/sim2real_$seed.log" 2>&1 &
done
wait
if [[ ${SIM2REAL:-1} == 1 ]]; then
  $DADA sim2real --task denoise --report-only --output "$W/sim2real" \
    > "$W/logs/sim2real_report.log" 2>&1
  echo "sim2real report: exit $?"
fi

cp "$W"/bench_*.json "$W"/profile_tables.md \
  "$W"/sim2real/{results.json,results.md,psnr_vs_step.png,comparison.png} \
  "$OUT/" 2>/dev/null
tar -czf "$OUT/logs.tgz" -C "$W" logs sim2real/runs
tail -n 25 "$W"/logs/*.log
