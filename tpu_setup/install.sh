#!/usr/bin/env bash
# Installs the project with jax[tpu] on every worker of a TPU VM / slice.

usage() {
  cat <<'EOF'
Usage: tpu_setup/install.sh --name=NAME --zone=ZONE [options]

Puts the code on every worker (a copy of this checkout, or a git clone), creates a
Python virtualenv there with uv and installs the pinned set
(requirements/constraints.txt) plus jax[tpu] of the pinned jax version, then prints
each worker's process index and device counts.

  --name=NAME          TPU VM name
  --zone=ZONE          its zone
  --repo=URL           git clone URL on the workers (default: copy this checkout)
  --ref=REF            branch or tag to check out with --repo (default: main)
  --src=DIR            local checkout to copy (default: this repository)
  --dir=PATH           code directory on the workers (default: ~/ttrl-jax)
  --venv=PATH          virtualenv on the workers (default: ~/ttrl-venv)
  --python=X.Y         Python version for the virtualenv (default: 3.11)
  --jax-version=V      jax[tpu] version (default: the jax pin of constraints.txt)
  --project=PROJECT    GCP project
  --dry-run            print the commands instead of running them
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPO=""
REF="main"
SRC="$REPO_ROOT"
DIR="$DEFAULT_DIR"
VENV="$DEFAULT_VENV"
PYTHON="3.11"
JAX_VERSION=""
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --repo | --repo=*) flag_value "$arg"; REPO="$VALUE" ;;
    --ref | --ref=*) flag_value "$arg"; REF="$VALUE" ;;
    --src | --src=*) flag_value "$arg"; SRC="$VALUE" ;;
    --dir | --dir=*) flag_value "$arg"; DIR="$VALUE" ;;
    --venv | --venv=*) flag_value "$arg"; VENV="$VALUE" ;;
    --python | --python=*) flag_value "$arg"; PYTHON="$VALUE" ;;
    --jax-version | --jax-version=*) flag_value "$arg"; JAX_VERSION="$VALUE" ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
DIR_R="$(remote_path --dir "$DIR")"
VENV_R="$(remote_path --venv "$VENV")"
[[ "$PYTHON" =~ ^3\.[0-9]+$ ]] || die "--python='${PYTHON}' must look like 3.11"
if [[ -n "$REPO" ]]; then
  [[ "$REPO" =~ ^(https://|git@|ssh://)[A-Za-z0-9_.:/@+~-]+$ ]] ||
    die "--repo='${REPO}' is not a git URL (https://..., ssh://... or git@...)"
  [[ "$REF" =~ ^[A-Za-z0-9_./-]+$ ]] || die "--ref='${REF}' is not a branch or tag name"
else
  [[ -f "${SRC}/pyproject.toml" && -d "${SRC}/ttrl_jax" ]] ||
    die "--src='${SRC}' is not a ttrl-jax checkout (no pyproject.toml / ttrl_jax/)"
fi
CONSTRAINTS="${SRC}/requirements/constraints.txt"
if [[ -z "$JAX_VERSION" ]]; then
  [[ -f "$CONSTRAINTS" ]] || die "${CONSTRAINTS} not found; pass --jax-version=..."
  JAX_VERSION="$(sed -n 's/^jax==//p' "$CONSTRAINTS")"
  [[ -n "$JAX_VERSION" ]] || die "${CONSTRAINTS} pins no jax==...; pass --jax-version=..."
fi
[[ "$JAX_VERSION" =~ ^[0-9]+(\.[0-9]+)+$ ]] || die "--jax-version='${JAX_VERSION}' is not a version"

# 1. the code
if [[ -n "$REPO" ]]; then
  on_workers all "if [ -d ${DIR_R}/.git ]; then git -C ${DIR_R} fetch -q --depth 1 origin ${REF} \
&& git -C ${DIR_R} checkout -q FETCH_HEAD; else git clone -q --depth 1 --branch ${REF} ${REPO} ${DIR_R}; fi"
else
  TARBALL="${TMPDIR:-/tmp}/ttrl-jax-${NAME}.tgz"
  run tar -czf "$TARBALL" --exclude=./.venv --exclude=./.git --exclude=./runs \
    --exclude=__pycache__ -C "$SRC" .
  mapfile -t FLAGS < <(gcloud_flags)
  run gcloud compute tpus tpu-vm scp "$TARBALL" "${NAME}:/tmp/ttrl-jax-src.tgz" "${FLAGS[@]}" \
    --worker=all
  on_workers all "mkdir -p ${DIR_R} && tar -xzf /tmp/ttrl-jax-src.tgz -C ${DIR_R}"
fi

# 2. the environment (uv fetches the Python version if the image lacks it)
# shellcheck disable=SC2016  # $HOME and $PATH expand on the workers
UV='export PATH=$HOME/.local/bin:$PATH; command -v uv >/dev/null || python3 -m pip install -q --user uv || python3 -m pip install -q --user --break-system-packages uv'
on_workers all "set -e; ${UV}; uv venv -q --allow-existing --python ${PYTHON} ${VENV_R}; \
uv pip install -q --python ${VENV_R}/bin/python -c ${DIR_R}/requirements/constraints.txt \
-e ${DIR_R} 'jax[tpu]==${JAX_VERSION}'; \
${VENV_R}/bin/python -c 'import jax; print(\"process\", jax.process_index(), \"local devices\", \
jax.local_device_count(), \"global devices\", jax.device_count())'"
