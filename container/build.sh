#!/usr/bin/env bash
# Build the textgen image with podman on this machine: CPU torch from the host's pip find-links
# folder, FROM the local debootstrapped base (container/base.sh), tagged $IMAGE
# (default localhost/textgen:local). Runs container/setup.sh and container/base.sh first.
#
# Environment:
#   IMAGE        tag to build (default localhost/textgen:local)
#   BAKE_MODEL   1 to embed the default model in the image (default 0)
#   WHEELS_DIR   folder holding the CPU torch wheel (default: pip's configured find-links)
#   PIP_CERT     CA bundle pip needs to reach the package index (default: pip's configured cert,
#                else /etc/ssl/certs/ca-certificates.crt); passed as a build secret
#   BUILD_ARGS   extra arguments for `podman build` (split on spaces)
set -euo pipefail
# shellcheck source=container/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
"$CONTAINER_DIR/setup.sh"
"$CONTAINER_DIR/base.sh"
require_setup

# The torch requirement the Dockerfile pins (ARG TORCH_SPEC="torch==X"); the local build takes the
# same version from the host's CPU wheel.
torch_spec="${TORCH_SPEC:-$(sed -n 's/^ARG TORCH_SPEC="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO_ROOT/Dockerfile")}"
[ -n "$torch_spec" ] || die "cannot read ARG TORCH_SPEC from $REPO_ROOT/Dockerfile"
torch_version="${torch_spec#torch==}"
[ "$torch_version" != "$torch_spec" ] || die "TORCH_SPEC '$torch_spec' is not of the form torch==VERSION"
torch_version="${torch_version%+cpu}"

pip_config() { python3 -m pip config get "$1" 2>/dev/null || true; }

if [ -z "${WHEELS_DIR:-}" ]; then
    for d in $(pip_config global.find-links) ${PIP_FIND_LINKS:-}; do
        if compgen -G "$d/torch-${torch_version}+cpu-*.whl" >/dev/null; then WHEELS_DIR="$d"; break; fi
    done
fi
[ -n "${WHEELS_DIR:-}" ] || die "no torch-${torch_version}+cpu wheel in pip's find-links folders; set WHEELS_DIR=FOLDER"
compgen -G "$WHEELS_DIR/torch-${torch_version}+cpu-*.whl" >/dev/null \
    || die "WHEELS_DIR=$WHEELS_DIR holds no torch-${torch_version}+cpu-*.whl"

cert="${PIP_CERT:-$(pip_config global.cert)}"
cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$cert" ] || die "CA bundle $cert for pip is missing or empty (set PIP_CERT=FILE)"

bake="${BAKE_MODEL:-0}"
case "$bake" in 0 | 1) ;; *) die "BAKE_MODEL must be 0 or 1, got '$bake'" ;; esac

# shellcheck disable=SC2206  # BUILD_ARGS is split into words on purpose
extra=(${BUILD_ARGS:-})
log "building $IMAGE from $BASE_IMAGE_LOCAL (torch ${torch_version}+cpu from $WHEELS_DIR, BAKE_MODEL=$bake)"
t0="$(now)"
podman build \
    --pull=never \
    --network host \
    --layers \
    --format docker \
    --secret "id=pip_cert,src=$cert" \
    --volume "$WHEELS_DIR:/wheels:ro" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE_LOCAL" \
    --build-arg "TORCH_SPEC=torch==${torch_version}+cpu" \
    --build-arg "PIP_EXTRA_ARGS=--find-links /wheels" \
    --build-arg "BAKE_MODEL=$bake" \
    --file "$REPO_ROOT/Dockerfile" \
    --tag "$IMAGE" \
    "${extra[@]}" \
    "$REPO_ROOT" || die "podman build failed"
log "built $IMAGE in $(elapsed "$t0") s"
# Earlier builds of the tag are left untagged; drop them (the layer cache stays usable). The
# storage is this project's own, so nothing else is affected.
pruned="$(podman image prune --force)" || die "podman image prune failed"
[ -z "$pruned" ] || log "removed $(printf '%s\n' "$pruned" | wc -l) untagged image(s) from earlier builds"

# Check what was built: the entry point, the serve command, the CPU torch, the app package.
t0="$(now)"
check="$(podman run --rm --network host "$IMAGE" python -c '
import shutil, torch, textgen
assert shutil.which("serve"), "serve is not on PATH"
print(torch.__version__, textgen.__version__)
')" || die "the image $IMAGE cannot import torch and textgen"
read -r got_torch got_app <<<"$check"
[ "$got_torch" = "${torch_version}+cpu" ] || die "image has torch $got_torch, expected ${torch_version}+cpu"
if [ "$bake" = 1 ]; then
    podman run --rm --network host "$IMAGE" sh -c 'test -f "$TEXTGEN_DEFAULT_MODEL_DIR/config.json"' \
        || die "BAKE_MODEL=1 but the image has no model in TEXTGEN_DEFAULT_MODEL_DIR"
fi
size="$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MiB", $1 / 1048576 }')"
log "image $IMAGE ok: textgen $got_app, torch $got_torch, $size (checked in $(elapsed "$t0") s)"
