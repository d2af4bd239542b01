# shellcheck shell=bash disable=SC2034  # the variables are read by the sourcing scripts
# Helpers shared by the tpu_setup scripts (sourced, never run on its own).
#
# Flags are given as --flag=value. Every script accepts the common flags
#   --name=NAME --zone=ZONE [--project=PROJECT] [--dry-run] [--help]
# and fails with one "error: ..." line on stderr and exit status 2 on a bad input.
# With --dry-run the commands are printed (one per line, shell-quoted, ready to paste)
# instead of run.

set -euo pipefail

TPU_SETUP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${TPU_SETUP_DIR}/.." && pwd)"

NAME=""
ZONE=""
PROJECT=""
DRY_RUN=0

# Defaults for paths on the TPU workers (a leading ~/ means the worker's $HOME).
# shellcheck disable=SC2088  # kept literal: expanded on the worker by remote_path
DEFAULT_DIR="~/ttrl-jax"
# shellcheck disable=SC2088
DEFAULT_VENV="~/ttrl-venv"
# shellcheck disable=SC2088
DEFAULT_LOG_DIR="~/ttrl-logs"

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

# quote ARG: ARG as one shell word: bare if it only has safe characters, else in single
# quotes (a --flag=VALUE keeps the --flag= outside them).
quote() {
  local s="$1" prefix=""
  if [[ -n "$s" && "$s" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
    return
  fi
  if [[ "$s" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    s="${BASH_REMATCH[2]}"
  fi
  printf "%s'%s'" "$prefix" "${s//\'/\'\\\'\'}"
}

# run CMD ARGS...: runs the command, or prints it (quoted) under --dry-run.
run() {
  if ((DRY_RUN)); then
    local out="" arg
    for arg in "$@"; do
      out+="$(quote "$arg") "
    done
    printf '%s\n' "${out% }"
  else
    "$@"
  fi
}

# flag_value FLAG=VALUE: sets VALUE (in this shell, so that a die ends the script);
# dies if the value is missing or empty.
VALUE=""
flag_value() {
  local flag="${1%%=*}"
  VALUE="${1#*=}"
  [[ "$1" == *=* && -n "$VALUE" ]] || die "${flag} needs a value: ${flag}=VALUE"
}

# parse_common_flag ARG: handles the flags every script has; returns 1 for others.
parse_common_flag() {
  case "$1" in
    --name | --name=*) flag_value "$1"; NAME="$VALUE" ;;
    --zone | --zone=*) flag_value "$1"; ZONE="$VALUE" ;;
    --project | --project=*) flag_value "$1"; PROJECT="$VALUE" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) return 1 ;;
  esac
}

unknown_flag() {
  die "unknown argument '$1' (flags are --flag=value; see --help)"
}

# validate_common: --name and --zone are required and well-formed.
validate_common() {
  [[ -n "$NAME" ]] || die "--name is required (the TPU VM / queued resource name)"
  [[ "$NAME" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die "--name='${NAME}' is not a valid name (lowercase letters, digits and hyphens," \
      "starting with a letter, at most 63 characters)"
  [[ -n "$ZONE" ]] || die "--zone is required (e.g. us-central2-b)"
  [[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    die "--zone='${ZONE}' is not a zone (expected REGION-ZONE like us-central2-b)"
  if [[ -n "$PROJECT" ]]; then
    [[ "$PROJECT" =~ ^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$ ]] ||
      die "--project='${PROJECT}' is not a valid project id"
  fi
}

# validate_accelerator TYPE: a Cloud TPU accelerator type such as v4-8 or v5litepod-8.
validate_accelerator() {
  [[ -n "$1" ]] || die "--accelerator-type is required (e.g. v4-8, v5litepod-8, v5p-8, v6e-8)"
  [[ "$1" =~ ^v(2|3|4|5p|5litepod|6e)-[0-9]+$ ]] ||
    die "--accelerator-type='$1' is not a TPU type (v2-N, v3-N, v4-N, v5p-N, v5litepod-N," \
      "v6e-N; v5e is spelt v5litepod)"
}

# default_runtime TYPE: the TPU VM software version for an accelerator generation.
default_runtime() {
  case "$1" in
    v2-* | v3-* | v4-*) printf 'tpu-ubuntu2204-base' ;;
    v5litepod-*) printf 'v2-alpha-tpuv5-lite' ;;
    v5p-*) printf 'v2-alpha-tpuv5' ;;
    v6e-*) printf 'v2-alpha-tpuv6e' ;;
    *) die "no default runtime version for '$1'; pass --version=..." ;;
  esac
}

# remote_path FLAG PATH: PATH for a remote shell command (~/ becomes $HOME/); dies on
# characters that would need quoting.
remote_path() {
  local flag="$1" path="$2"
  [[ -n "$path" ]] || die "${flag} must not be empty"
  [[ "$path" =~ ^(~/)?[A-Za-z0-9_./+-]+$ ]] ||
    die "${flag}='${path}' may only hold letters, digits and _ . / + - (and a leading ~/)"
  if [[ "$path" == \~/* ]]; then
    # shellcheck disable=SC2016  # $HOME expands on the worker
    printf '$HOME/%s' "${path#\~/}"
  else
    printf '%s' "$path"
  fi
}

# gcloud_flags: the --zone / --project flags of every gcloud call.
gcloud_flags() {
  printf '%s\n' "--zone=${ZONE}"
  if [[ -n "$PROJECT" ]]; then
    printf '%s\n' "--project=${PROJECT}"
  fi
}

# on_workers WORKER COMMAND: runs a shell command on TPU workers (all, or one index).
on_workers() {
  local flags
  mapfile -t flags < <(gcloud_flags)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${flags[@]}" "--worker=$1" "--command=$2"
}

# validate_worker W: "all" or a worker index.
validate_worker() {
  [[ "$1" == all || "$1" =~ ^[0-9]+$ ]] || die "--worker='$1' must be 'all' or a worker index"
}

# validate_run_name NAME: a log/run name (letters, digits, _ . -).
validate_run_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
    die "--run='$1' must start with a letter or digit and hold only letters, digits and _ . -"
}

# WORKER_ID_CMD: a remote shell snippet printing this worker's index.
# shellcheck disable=SC2016  # expanded on the worker, not here
WORKER_ID_CMD='$(curl -sf -m 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)'
