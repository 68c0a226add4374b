#!/usr/bin/env bash
# Trains dada-jax on the local GPU(s) of one machine.
#
#   launch/gpu.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]
#
#   launch/gpu.sh configs/denoise.py runs/denoise
#   launch/gpu.sh configs/denoise.py:runlocal /tmp/smoke --config.train.total_steps=100
#
# Creates the virtual environment $VENV (default: .venv in the repository) if
# it is missing, installs the package with its CUDA extra (skipped with
# SKIP_INSTALL=1), sets the XLA settings below and runs
# `dada-jax train --config CONFIG --workdir WORKDIR [overrides]` in the current
# directory (CONFIG and WORKDIR are relative to it). The venv is made with
# $PYTHON (default python3; jax needs >= 3.11). One process drives every GPU
# it sees (restrict with CUDA_VISIBLE_DEVICES).
# --dry-run prints each command instead of running it.
set -euo pipefail

usage() {
  echo "usage: launch/gpu.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
}

# shellcheck source=common.bash
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

parse_train_args "$@"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"

if [[ ! -x "$VENV/bin/python" ]]; then
  run "${PYTHON:-python3}" -m venv "$VENV"
fi
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  run "$VENV/bin/python" -m pip install -e "$REPO[cuda]"
fi

# JAX reserves this fraction of GPU memory at start (default 0.75); 0.9 leaves
# room for cuDNN/cuBLAS workspaces and the CUDA context.
# --xla_gpu_enable_latency_hiding_scheduler=true: schedules the gradient
#   all-reduce to overlap with backward compute when one process drives
#   several GPUs (no effect on a single GPU; off by default in XLA).
# The caller's own XLA_FLAGS come last, so they win.
gpu_xla_settings

run "$VENV/bin/dada-jax" train --config "$CONFIG" --workdir "$WORKDIR" \
  "${OVERRIDES[@]}"
