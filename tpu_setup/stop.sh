#!/usr/bin/env bash
# Stops a run started by launch.sh on every worker (via its pid files).

usage() {
  cat <<'EOF'
Usage: tpu_setup/stop.sh --name=NAME --zone=ZONE --run=RUN [options]

Sends SIGTERM to the process recorded in LOG_DIR/RUN.workerI.pid on every worker (a
stale TPU process keeps the chips busy and the next launch fails).

  --name=NAME        TPU VM name
  --zone=ZONE        its zone
  --run=RUN          the run name given to launch.sh
  --log-dir=PATH     log directory on the workers (default: ~/ttrl-logs)
  --project=PROJECT  GCP project
  --dry-run          print the command instead of running it
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUN=""
LOG_DIR="$DEFAULT_LOG_DIR"
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --run | --run=*) flag_value "$arg"; RUN="$VALUE" ;;
    --log-dir | --log-dir=*) flag_value "$arg"; LOG_DIR="$VALUE" ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
[[ -n "$RUN" ]] || die "--run is required (the run name launch.sh printed)"
validate_run_name "$RUN"
LOG_R="$(remote_path --log-dir "$LOG_DIR")"
on_workers all "for f in ${LOG_R}/${RUN}.worker*.pid; do [ -f \"\$f\" ] || continue; \
kill \$(cat \"\$f\") 2>/dev/null && echo \"stopped \$(hostname): \$f\"; rm -f \"\$f\"; done; true"
