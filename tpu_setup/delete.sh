#!/usr/bin/env bash
# Deletes a TPU VM, or the queued resource that created it.

usage() {
  cat <<'EOF'
Usage: tpu_setup/delete.sh --name=NAME --zone=ZONE [options]

  --name=NAME        TPU VM name (the queued resource name with --queued)
  --zone=ZONE        its zone
  --queued           it was created with create.sh --queued: delete the queued
                     resource (--force also deletes its TPU VM)
  --yes              do not ask for confirmation (gcloud --quiet)
  --project=PROJECT  GCP project
  --dry-run          print the command instead of running it
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

QUEUED=0
YES=0
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --queued) QUEUED=1 ;;
    --yes) YES=1 ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
mapfile -t FLAGS < <(gcloud_flags)
extra=()
if ((YES)); then extra+=(--quiet); fi
if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$NAME" "${FLAGS[@]}" --force "${extra[@]}"
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${FLAGS[@]}" "${extra[@]}"
fi
