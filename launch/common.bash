# Helpers shared by the launch scripts (sourced, not run).
# Every script sets DRY_RUN=0|1 before calling `run`.

die() {
  echo "${0##*/}: $*" >&2
  exit 2
}

# Prints an argument so that the shell reads it back unchanged.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Quotes every argument and joins them with spaces.
join() {
  local out="" arg
  for arg in "$@"; do out+="$(quote "$arg") "; done
  printf '%s' "${out% }"
}

# Runs a command, or with --dry-run prints it (shell-quoted) instead.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then join "$@"; echo; else "$@"; fi
}

# Exports NAME=VALUE (and prints the export under --dry-run).
setenv() {
  export "$1=$2"
  if [[ "$DRY_RUN" == 1 ]]; then echo "export $1=$(quote "$2")"; fi
}

# Parses `[--dry-run] CONFIG WORKDIR [--config.x=y ...]` (calling `usage` when
# short) into DRY_RUN, CONFIG, WORKDIR and OVERRIDES, and checks them.
parse_train_args() {
  DRY_RUN=0
  if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
  [[ $# -ge 2 ]] || usage
  CONFIG="$1"
  WORKDIR="$2"
  shift 2
  OVERRIDES=("$@")
  local arg
  for arg in "$@"; do
    [[ "$arg" == --config.*=* ]] || die "expected --config.FIELD=VALUE, got: $arg"
  done
  [[ -f "${CONFIG%%:*}" ]] || die "no such config file: ${CONFIG%%:*}"
}

# The XLA settings of launch/gpu.sh (see there); the caller's XLA_FLAGS win.
gpu_xla_settings() {
  setenv XLA_PYTHON_CLIENT_MEM_FRACTION "${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
  setenv XLA_FLAGS "--xla_gpu_enable_latency_hiding_scheduler=true${XLA_FLAGS:+ $XLA_FLAGS}"
}
