#!/usr/bin/env bash
# Trains dada-jax on a Cloud TPU VM slice (one or many hosts) with gcloud.
#
#   launch/tpu_vm.sh [--dry-run] {create|copy|setup|run|delete} [args]
#
#   create [gcloud flags]   create the TPU VM (e.g. add --spot)
#   copy                    pack this checkout; unpack it as ~/dada-jax on
#                           every worker (replacing an older copy)
#   setup                   run launch/setup_tpu.sh on every worker
#   run CONFIG WORKDIR [--config.x=y ...]
#                           `dada-jax train --multihost` on every worker at
#                           once; WORKDIR must be gs://BUCKET/PATH, which all
#                           hosts share; CONFIG is relative to the repository
#   delete [gcloud flags]   delete the TPU VM (add --quiet to skip the prompt)
#
# Settings, from the environment:
#   TPU_NAME     (default dada-jax)
#   ZONE         (default us-west4-a)
#   ACCELERATOR  (default v5litepod-16: 16 v5e chips on 4 hosts)
#   TPU_VERSION  runtime version (default v2-alpha-tpuv5-lite, the v5e one)
#   PROJECT      Google Cloud project (default: gcloud's configured one)
#
#   TPU_NAME=dn ZONE=us-west4-a launch/tpu_vm.sh create
#   launch/tpu_vm.sh copy && launch/tpu_vm.sh setup
#   launch/tpu_vm.sh run configs/denoise.py gs://my-bucket/runs/denoise
#
# `run` stays attached to the workers' output: start it inside tmux or
# screen. --dry-run prints each command instead of running it.
set -euo pipefail

USAGE="usage: launch/tpu_vm.sh [--dry-run] {create|copy|setup|run|delete} [args]
       launch/tpu_vm.sh [--dry-run] run CONFIG gs://BUCKET/WORKDIR [--config.x=y ...]"

usage() {
  echo "$USAGE" >&2
  exit 2
}

# shellcheck source=common.bash
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 ]] || usage
COMMAND="$1"
shift

TPU_NAME="${TPU_NAME:-dada-jax}"
ZONE="${ZONE:-us-west4-a}"
ACCELERATOR="${ACCELERATOR:-v5litepod-16}"
TPU_VERSION="${TPU_VERSION:-v2-alpha-tpuv5-lite}"
PROJECT="${PROJECT:-}"
WHERE=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then WHERE+=(--project="$PROJECT"); fi
TPU=(gcloud compute tpus tpu-vm)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR=dada-jax  # Relative to the home directory on the workers.

# Runs a shell command on every worker of the slice at once.
on_all_workers() {
  run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command "$1"
}

case "$COMMAND" in
  create)
    run "${TPU[@]}" create "$TPU_NAME" "${WHERE[@]}" \
      --accelerator-type="$ACCELERATOR" --version="$TPU_VERSION" "$@"
    ;;
  copy)
    [[ $# -eq 0 ]] || usage
    tarball="${TMPDIR:-/tmp}/dada-jax-$TPU_NAME.tgz"
    run tar -czf "$tarball" -C "$REPO" --exclude=.git --exclude='.venv*' \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache .
    run "${TPU[@]}" scp "$tarball" "$TPU_NAME:$REMOTE_DIR.tgz" \
      "${WHERE[@]}" --worker=all
    on_all_workers "rm -rf $REMOTE_DIR && mkdir $REMOTE_DIR && tar -xzf $REMOTE_DIR.tgz -C $REMOTE_DIR && rm $REMOTE_DIR.tgz"
    ;;
  setup)
    [[ $# -eq 0 ]] || usage
    on_all_workers "bash $REMOTE_DIR/launch/setup_tpu.sh"
    ;;
  run)
    [[ $# -ge 2 ]] || usage
    config="$1"
    workdir="$2"
    shift 2
    [[ "$workdir" == gs://?* ]] || die "run: WORKDIR must be a gs:// path that every host can write, got: $workdir"
    [[ -f "$REPO/${config%%:*}" ]] || die "run: CONFIG must be a file in this repository, relative to it (the workers use their copy), got: $config"
    for arg in "$@"; do
      [[ "$arg" == --config.*=* ]] || die "run: expected --config.FIELD=VALUE, got: $arg"
    done
    train=(train --multihost --config "$config" --workdir "$workdir" "$@")
    # `~` stays unquoted so that each worker's shell expands it.
    on_all_workers "cd $REMOTE_DIR && ~/dada-jax-venv/bin/dada-jax $(join "${train[@]}")"
    ;;
  delete)
    run "${TPU[@]}" delete "$TPU_NAME" "${WHERE[@]}" "$@"
    ;;
  *)
    usage
    ;;
esac
