#!/usr/bin/env bash
# Trains dada-jax on several GPU hosts of a SLURM allocation: one process per
# host, each driving all of its GPUs, joined into one job.
#
#   launch/slurm.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]
#
# Run it inside an allocation, from the repository (shared by the hosts), e.g.
#   sbatch --nodes=4 --gpus-per-node=8 --wrap \
#       "launch/slurm.sh configs/denoise.py /shared/runs/denoise"
#
# It starts `srun --ntasks-per-node=1 ... dada-jax train --multihost` once per
# host. srun gives every process SLURM_JOB_ID, SLURM_STEP_NODELIST,
# SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID, from which JAX takes the
# coordinator (the first host, port 61440 + job id mod 4096), the process
# count and this process's id; set JAX_COORDINATOR_ADDRESS=host:port to pick
# another address. WORKDIR must be on a filesystem every host shares.
#
# Settings, from the environment:
#   VENV           environment with dada-jax installed on every host (default
#                  .venv in the repository; make it with launch/gpu.sh)
#   SRUN           the srun command (default srun)
#   XLA_FLAGS, XLA_PYTHON_CLIENT_MEM_FRACTION  as in launch/gpu.sh
# --dry-run prints each command instead of running it.
set -euo pipefail

usage() {
  echo "usage: launch/slurm.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
}

# shellcheck source=common.bash
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

parse_train_args "$@"
[[ "$WORKDIR" != *://* ]] || [[ "$WORKDIR" == gs://?* ]] \
  || die "WORKDIR must be a shared path or gs://BUCKET/PATH, got: $WORKDIR"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
[[ "$DRY_RUN" == 1 || -x "$VENV/bin/dada-jax" ]] \
  || die "no $VENV/bin/dada-jax: set VENV, or run launch/gpu.sh once to make it"

gpu_xla_settings

# --kill-on-bad-exit: a host that fails takes the others down at once instead
# of leaving them waiting in a collective.
run "${SRUN:-srun}" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "$VENV/bin/dada-jax" train --multihost --config "$CONFIG" \
  --workdir "$WORKDIR" "${OVERRIDES[@]}"
