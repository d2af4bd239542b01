#!/usr/bin/env bash
# Shows (or follows) the run logs of the workers.

usage() {
  cat <<'EOF'
Usage: tpu_setup/logs.sh --name=NAME --zone=ZONE --run=RUN [options]

Prints the last lines of LOG_DIR/RUN.worker*.log on the workers (each file under a
"==> file <==" header naming its worker).

  --name=NAME        TPU VM name
  --zone=ZONE        its zone
  --run=RUN          the run name given to launch.sh (default there: the preset's name)
  --worker=W         all (default) or one worker index, e.g. 0
  --lines=N          lines per log (default: 50)
  --follow           keep following the logs (Ctrl-C to stop)
  --log-dir=PATH     log directory on the workers (default: ~/ttrl-logs)
  --project=PROJECT  GCP project
  --dry-run          print the command instead of running it
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUN=""
WORKER="all"
N_LINES=50
FOLLOW=0
LOG_DIR="$DEFAULT_LOG_DIR"
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --run | --run=*) flag_value "$arg"; RUN="$VALUE" ;;
    --worker | --worker=*) flag_value "$arg"; WORKER="$VALUE" ;;
    --lines | --lines=*) flag_value "$arg"; N_LINES="$VALUE" ;;
    --log-dir | --log-dir=*) flag_value "$arg"; LOG_DIR="$VALUE" ;;
    --follow) FOLLOW=1 ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
[[ -n "$RUN" ]] || die "--run is required (the run name launch.sh printed)"
validate_run_name "$RUN"
validate_worker "$WORKER"
[[ "$N_LINES" =~ ^[0-9]+$ ]] || die "--lines='${N_LINES}' must be a number"
LOG_R="$(remote_path --log-dir "$LOG_DIR")"
TAIL="tail -v -n ${N_LINES}"
if ((FOLLOW)); then
  TAIL+=" -F"
fi
on_workers "$WORKER" "${TAIL} ${LOG_R}/${RUN}.worker*.log"
