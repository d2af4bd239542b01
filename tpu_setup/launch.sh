#!/usr/bin/env bash
# Starts experiments.ttrl on every worker at once, in the background, one log per worker.

usage() {
  cat <<'EOF'
Usage: tpu_setup/launch.sh --name=NAME --zone=ZONE --config=PRESET [options] [-- FLAGS...]

Runs `python -m experiments.ttrl --config=PRESET FLAGS...` on all workers at the same
time (a multi-host JAX program must start on every host; jax.distributed finds its
peers on Cloud TPU by itself). Each worker runs it under nohup and writes
LOG_DIR/RUN.workerI.log and RUN.workerI.pid; follow them with logs.sh, stop with stop.sh.

  --name=NAME        TPU VM name
  --zone=ZONE        its zone
  --config=PRESET    config file, relative to the repository
                     (e.g. experiments/configs/ttrl_aime_qwen2p5_math_7b.py)
  --run=RUN          log / pid file name (default: the preset's file name)
  --dir=PATH         code directory on the workers (default: ~/ttrl-jax)
  --venv=PATH        virtualenv on the workers (default: ~/ttrl-venv)
  --log-dir=PATH     log directory on the workers (default: ~/ttrl-logs)
  --project=PROJECT  GCP project
  --dry-run          print the commands instead of running them
  -- FLAGS...        passed on to experiments.ttrl, e.g.
                     -- --config.model.path=~/models/Qwen2.5-Math-7B --config.mesh.fsdp=8
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG=""
RUN=""
DIR="$DEFAULT_DIR"
VENV="$DEFAULT_VENV"
LOG_DIR="$DEFAULT_LOG_DIR"
PASS=()
while (($#)); do
  arg="$1"
  shift
  if [[ "$arg" == "--" ]]; then
    PASS=("$@")
    break
  fi
  parse_common_flag "$arg" && continue
  case "$arg" in
    --config | --config=*) flag_value "$arg"; CONFIG="$VALUE" ;;
    --run | --run=*) flag_value "$arg"; RUN="$VALUE" ;;
    --dir | --dir=*) flag_value "$arg"; DIR="$VALUE" ;;
    --venv | --venv=*) flag_value "$arg"; VENV="$VALUE" ;;
    --log-dir | --log-dir=*) flag_value "$arg"; LOG_DIR="$VALUE" ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
[[ -n "$CONFIG" ]] || die "--config is required (e.g. experiments/configs/ttrl_aime_qwen2p5_math_7b.py)"
[[ "$CONFIG" =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py$ && "$CONFIG" != *..* ]] ||
  die "--config='${CONFIG}' must be a .py file path relative to the repository"
[[ -f "${REPO_ROOT}/${CONFIG}" ]] || die "--config='${CONFIG}': no such file in ${REPO_ROOT}"
RUN="${RUN:-$(basename "$CONFIG" .py)}"
validate_run_name "$RUN"
DIR_R="$(remote_path --dir "$DIR")"
VENV_R="$(remote_path --venv "$VENV")"
LOG_R="$(remote_path --log-dir "$LOG_DIR")"
ARGS=""
for flag in "${PASS[@]}"; do
  [[ "$flag" == --* ]] || die "'${flag}' after -- is not a --flag for experiments.ttrl"
  [[ "$flag" != *$'\n'* ]] || die "a flag after -- holds a newline"
  if [[ "$flag" =~ ^(--[A-Za-z0-9_.]+=)~/([A-Za-z0-9_./+-]*)$ ]]; then
    # a path value starting with ~/ is expanded on the worker
    ARGS+=" ${BASH_REMATCH[1]}\$HOME/${BASH_REMATCH[2]}"
  else
    ARGS+=" $(quote "$flag")"
  fi
done

LOG="${LOG_R}/${RUN}.worker\${W}"
on_workers all "set -e; W=${WORKER_ID_CMD}; mkdir -p ${LOG_R}; \
if [ -f ${LOG}.pid ] && kill -0 \$(cat ${LOG}.pid) 2>/dev/null; then \
echo \"error: ${RUN} is already running on worker \${W} (stop.sh --run=${RUN})\" >&2; exit 1; fi; \
cd ${DIR_R}; nohup ${VENV_R}/bin/python -m experiments.ttrl --distributed --config=${CONFIG}${ARGS} \
> ${LOG}.log 2>&1 < /dev/null & echo \$! > ${LOG}.pid; \
echo \"worker \${W}: started ${RUN} (pid \$(cat ${LOG}.pid), log ${LOG}.log)\""
