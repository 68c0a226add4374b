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
