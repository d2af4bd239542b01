#!/usr/bin/env bash
# Copies a model directory onto every worker, from GCS or the Hugging Face hub.

usage() {
  cat <<'EOF'
Usage: tpu_setup/copy_model.sh --name=NAME --zone=ZONE --source=SRC --dest=PATH [options]

Every worker loads the checkpoint from its own disk, so the model is copied to each.

  --name=NAME        TPU VM name
  --zone=ZONE        its zone
  --source=SRC       gs://BUCKET/PATH (a directory holding config.json, *.safetensors,
                     the tokenizer) or hf://OWNER/REPO (e.g. hf://Qwen/Qwen2.5-Math-1.5B)
  --dest=PATH        model directory on the workers, e.g. ~/models/Qwen2.5-Math-1.5B
  --revision=REV     with hf://: branch, tag or commit (default: main)
  --gsutil           with gs://: use gsutil -m cp -r instead of gcloud storage cp -r
  --venv=PATH        virtualenv holding the hf CLI (default: ~/ttrl-venv; see install.sh)
  --project=PROJECT  GCP project
  --dry-run          print the commands instead of running them
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SOURCE=""
DEST=""
REVISION=""
GSUTIL=0
VENV="$DEFAULT_VENV"
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --source | --source=*) flag_value "$arg"; SOURCE="$VALUE" ;;
    --dest | --dest=*) flag_value "$arg"; DEST="$VALUE" ;;
    --revision | --revision=*) flag_value "$arg"; REVISION="$VALUE" ;;
    --venv | --venv=*) flag_value "$arg"; VENV="$VALUE" ;;
    --gsutil) GSUTIL=1 ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
[[ -n "$SOURCE" ]] || die "--source is required (gs://BUCKET/PATH or hf://OWNER/REPO)"
[[ -n "$DEST" ]] || die "--dest is required (the model directory on the workers)"
DEST_R="$(remote_path --dest "$DEST")"
VENV_R="$(remote_path --venv "$VENV")"

case "$SOURCE" in
  gs://*)
    [[ "$SOURCE" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,220}(/[A-Za-z0-9_.+=-]+)*/?$ ]] ||
      die "--source='${SOURCE}' is not a gs://BUCKET/PATH directory"
    [[ -z "$REVISION" ]] || die "--revision only applies to hf:// sources"
    SRC="${SOURCE%/}"
    if ((GSUTIL)); then
      copy="gsutil -m cp -r '${SRC}/*' ${DEST_R}/"
    else
      copy="gcloud storage cp -r '${SRC}/*' ${DEST_R}/"
    fi
    on_workers all "set -e; mkdir -p ${DEST_R}; ${copy}; ls ${DEST_R}/config.json"
    ;;
  hf://*)
    REPO_ID="${SOURCE#hf://}"
    [[ "$REPO_ID" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
      die "--source='${SOURCE}' is not hf://OWNER/REPO"
    ((!GSUTIL)) || die "--gsutil only applies to gs:// sources"
    REVISION="${REVISION:-main}"
    [[ "$REVISION" =~ ^[A-Za-z0-9_./-]+$ ]] || die "--revision='${REVISION}' is not a revision"
    on_workers all "set -e; mkdir -p ${DEST_R}; ${VENV_R}/bin/hf download ${REPO_ID} \
--revision ${REVISION} --local-dir ${DEST_R}; ls ${DEST_R}/config.json"
    ;;
  *) die "--source='${SOURCE}' must start with gs:// or hf://" ;;
esac
