#!/usr/bin/env bash
# One `dada-jax bench` per network at the paper's training shapes on this CPU
# (DDA step, batch 3 of 128², one timed step after compilation; 512² restore),
# JSON per network here; table.py turns them into the BENCHMARKS table.
# Restormer and SwinIR do not fit 24 GiB at batch 3: Restormer also runs at
# batch 1; SwinIR with its blocks rematerialised (use_checkpoint, which does
# not lower XLA:CPU's planned peak), and at batch 1 of 64².
# Run from the repository root: bash launch/results/backbones_cpu/run.sh [name ...]
set -u
out=launch/results/backbones_cpu
# name | config | batch | side | extra flags
runs=(
  "denoise|configs/denoise.py|3|128|"
  "restormer|configs/restormer.py|3|128|"
  "restormer_b1|configs/restormer.py|1|128|"
  "uformer|configs/uformer.py|3|128|"
  "nafnet|configs/nafnet.py|3|128|"
  "swinir|configs/swinir.py|3|128|"
  "swinir_remat|configs/swinir.py|3|128|--config.restorer.swinir.use_checkpoint=True"
  "swinir_b1_64|configs/swinir.py|1|64|"
  "dncnn|configs/dncnn.py|3|128|"
  "sr3_critic|configs/denoise.py|3|128|--config.critic.name=sr3"
)
for run in "${runs[@]}"; do
  IFS='|' read -r name config batch side extra <<< "$run"
  if (( $# )) && [[ " $* " != *" $name "* ]]; then continue; fi
  # shellcheck disable=SC2086  # $extra is zero or one flag
  timeout 900 dada-jax bench --config "$config" $extra --batch "$batch" \
    --size "$side" --modes dda --steps 1 --warmup 0 --restore-sizes 512 \
    --json "$out/$name.json" --overwrite > "$out/$name.log" 2>&1
  echo "$name rc=$?"
done
