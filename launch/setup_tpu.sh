#!/usr/bin/env bash
# Installs dada-jax for TPUs on this machine (run on every TPU VM worker;
# `launch/tpu_vm.sh setup` does that for all of them).
#
#   launch/setup_tpu.sh [--dry-run]
#
# Creates the virtual environment $VENV (default: ~/dada-jax-venv, outside the
# copied repository so that a new `copy` keeps it) with Python >= 3.11 (what
# jax needs): $PYTHON if set, else the newest python3.1x found; on an image
# without one (TPU runtimes on Ubuntu 22.04 ship 3.10) it installs python3.11
# with apt-get. Then it installs this repository editable with its TPU extra,
# plus gcsfs and google-cloud-storage, through which etils.epath (Orbax, the
# metric writer) and tensorboardX write gs:// workdirs.
# --dry-run prints each command instead of running it.
set -euo pipefail

usage() {
  echo "usage: launch/setup_tpu.sh [--dry-run]" >&2
  exit 2
}

# shellcheck source=common.bash
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

# Whether $1 is a Python interpreter new enough for jax.
new_enough() {
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
[[ $# -eq 0 ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-$HOME/dada-jax-venv}"

if [[ ! -x "$VENV/bin/python" ]]; then
  if [[ -n "${PYTHON:-}" ]]; then
    new_enough "$PYTHON" || die "PYTHON=$PYTHON is not a Python >= 3.11"
  else
    for candidate in python3.13 python3.12 python3.11 python3; do
      if new_enough "$candidate"; then PYTHON="$candidate"; break; fi
    done
    if [[ -z "${PYTHON:-}" ]]; then
      PYTHON=python3.11
      run sudo apt-get update
      run sudo apt-get install -y python3.11 python3.11-venv
    fi
  fi
  run "$PYTHON" -m venv "$VENV"
fi
run "$VENV/bin/python" -m pip install --upgrade pip
run "$VENV/bin/python" -m pip install -e ".[tpu]" gcsfs google-cloud-storage
# An import check only: touching the TPUs here would wait for the other hosts.
run "$VENV/bin/python" -c 'import dada_jax, jax; print("jax", jax.__version__)'
