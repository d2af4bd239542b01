#!/usr/bin/env bash
# Creates a Cloud TPU VM (or slice), directly or through a queued resource.

usage() {
  cat <<'EOF'
Usage: tpu_setup/create.sh --name=NAME --zone=ZONE --accelerator-type=TYPE [options]

Creates a Cloud TPU VM or slice (v4-8, v5litepod-8, v5p-8, v6e-8, v4-32, ...).

  --name=NAME               TPU VM name (also the queued resource name with --queued)
  --zone=ZONE               e.g. us-central2-b (v4), us-west4-a (v5e), us-east5-a (v5p),
                            us-east5-b (v6e): the zone must offer the type
  --accelerator-type=TYPE   v4-8, v5litepod-8, v5p-8, v6e-8, ... (v5e is v5litepod)
  --version=RUNTIME         TPU software version (default by generation:
                            v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
                            v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  --queued                  request it as a queued resource (waits for capacity)
  --spot                    spot capacity (cheaper, can be preempted)
  --valid-until=DURATION    with --queued: give up after DURATION (e.g. 6h)
  --wait                    with --queued: poll until the resource is ACTIVE
  --project=PROJECT         GCP project (default: gcloud's configured project)
  --dry-run                 print the commands instead of running them
EOF
}

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCEL=""
VERSION=""
QUEUED=0
SPOT=0
VALID_UNTIL=""
WAIT=0
for arg in "$@"; do
  parse_common_flag "$arg" && continue
  case "$arg" in
    --accelerator-type | --accelerator-type=*) flag_value "$arg"; ACCEL="$VALUE" ;;
    --version | --version=*) flag_value "$arg"; VERSION="$VALUE" ;;
    --valid-until | --valid-until=*) flag_value "$arg"; VALID_UNTIL="$VALUE" ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --wait) WAIT=1 ;;
    *) unknown_flag "$arg" ;;
  esac
done

validate_common
validate_accelerator "$ACCEL"
VERSION="${VERSION:-$(default_runtime "$ACCEL")}"
[[ "$VERSION" =~ ^[A-Za-z0-9._-]+$ ]] || die "--version='${VERSION}' is not a runtime version"
if [[ -n "$VALID_UNTIL" ]]; then
  ((QUEUED)) || die "--valid-until needs --queued"
  [[ "$VALID_UNTIL" =~ ^[0-9]+[smhd]$ ]] || die "--valid-until='${VALID_UNTIL}' must look like 30m, 6h or 2d"
fi
if ((WAIT && !QUEUED)); then
  die "--wait needs --queued (a direct create already waits)"
fi

mapfile -t FLAGS < <(gcloud_flags)
if ((QUEUED)); then
  extra=()
  if ((SPOT)); then extra+=(--spot); fi
  if [[ -n "$VALID_UNTIL" ]]; then extra+=("--valid-until-duration=${VALID_UNTIL}"); fi
  run gcloud compute tpus queued-resources create "$NAME" "${FLAGS[@]}" \
    "--accelerator-type=${ACCEL}" "--runtime-version=${VERSION}" "--node-id=${NAME}" \
    "${extra[@]}"
  if ((WAIT)); then
    describe=(gcloud compute tpus queued-resources describe "$NAME" "${FLAGS[@]}"
      "--format=value(state.state)")
    if ((DRY_RUN)); then
      run "${describe[@]}"
    else
      while true; do
        state="$("${describe[@]}")"
        echo "queued resource ${NAME}: ${state}"
        case "$state" in
          ACTIVE) break ;;
          FAILED | SUSPENDED) die "queued resource ${NAME} is ${state}" ;;
        esac
        sleep 30
      done
    fi
  fi
else
  extra=()
  if ((SPOT)); then extra+=(--spot); fi
  run gcloud compute tpus tpu-vm create "$NAME" "${FLAGS[@]}" \
    "--accelerator-type=${ACCEL}" "--version=${VERSION}" "${extra[@]}"
fi
