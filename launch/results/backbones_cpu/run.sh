#!/usr/bin/env bash
# One `dada-jax bench` per network at the paper's training shapes on this CPU
# (DDA step, batch 3 of 128², one timed step after compilation; 512² restore),
# JSON per network here; table.py turns them into the BENCHMARKS table.
# Run from the repository root: bash launch/results/backbones_cpu/run.sh
set -u
out=launch/results/backbones_cpu
for spec in configs/denoise.py configs/restormer.py configs/uformer.py \
    configs/nafnet.py configs/swinir.py configs/denoise.py:critic_sr3; do
  name=$(basename "${spec%%:*}" .py)
  config=$spec
  extra=()
  if [[ "$spec" == *:critic_sr3 ]]; then
    name=sr3_critic; config=configs/denoise.py; extra=(--config.critic.name=sr3)
  fi
  timeout 900 dada-jax bench --config "$config" "${extra[@]}" --batch 3 \
    --size 128 --modes dda --steps 1 --warmup 0 --restore-sizes 512 \
    --json "$out/$name.json" --overwrite > "$out/$name.log" 2>&1
  echo "$name rc=$?"
done
