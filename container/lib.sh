# shellcheck shell=bash
# Common settings for the container scripts; sourced, never run.
#
# podman runs here with private configuration files (nothing under /etc is edited): every
# podman call made by these scripts sees CONTAINERS_CONF, CONTAINERS_STORAGE_CONF,
# CONTAINERS_REGISTRIES_CONF and TMPDIR pointing into $CONTAINER_CACHE_DIR.

set -euo pipefail

CONTAINER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CONTAINER_DIR/.." && pwd)"

# Everything generated (configs, image storage, base rootfs tarball) lives here; git-ignored.
CONTAINER_CACHE_DIR="${CONTAINER_CACHE_DIR:-$REPO_ROOT/.cache/container}"
IMAGE="${IMAGE:-localhost/textgen:local}"
BASE_IMAGE_LOCAL="${BASE_IMAGE_LOCAL:-localhost/debian:bookworm}"
BASE_SUITE="${BASE_SUITE:-bookworm}"

log() { printf '[container] %s\n' "$*" >&2; }
die() { printf '[container] ERROR: %s\n' "$*" >&2; exit 1; }

# Seconds since the epoch, with fractions (for timings).
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

require_root() {
    [ "$(id -u)" = 0 ] || die "these scripts need root (podman runs rootful here); run them as root"
}

# Export the variables that point podman at the private configuration. Does not write anything;
# container/setup.sh writes the files.
container_env() {
    CONTAINER_CACHE_DIR="$(mkdir -p "$CONTAINER_CACHE_DIR" && cd "$CONTAINER_CACHE_DIR" && pwd)"
    export CONTAINER_CACHE_DIR
    export CONTAINERS_CONF="$CONTAINER_CACHE_DIR/conf/containers.conf"
    export CONTAINERS_STORAGE_CONF="$CONTAINER_CACHE_DIR/conf/storage.conf"
    export CONTAINERS_REGISTRIES_CONF="$CONTAINER_CACHE_DIR/conf/registries.conf"
    export TMPDIR="$CONTAINER_CACHE_DIR/tmp"
    mkdir -p "$TMPDIR"
}

# Fail unless the private configuration exists (written by container/setup.sh).
require_setup() {
    container_env
    local f
    for f in "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_REGISTRIES_CONF"; do
        [ -s "$f" ] || die "missing $f: run container/setup.sh first"
    done
    command -v podman >/dev/null || die "podman is not installed: run container/setup.sh first"
}
