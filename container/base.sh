#!/usr/bin/env bash
# Build the local base image (default localhost/debian:bookworm) for podman builds on a machine
# that cannot pull images: debootstrap --variant=minbase of Debian bookworm with Python 3.11
# (python3, python3-venv) and CA certificates, packed as $CONTAINER_CACHE_DIR/base-NAME.tar and
# imported with `podman import`. BASE_PACKAGES and BASE_IMAGE_LOCAL change the package set and name.
#
# The Debian mirror is read from this host's apt sources (override with BASE_MIRROR=URL).
# Skips everything when the image already exists with the same package set; re-imports from the
# cached base.tar when only the image is gone. FORCE_BASE=1 rebuilds from scratch.
set -euo pipefail
# shellcheck source=container/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_setup

BASE_PACKAGES="${BASE_PACKAGES:-python3,python3-venv,ca-certificates}"
spec="debootstrap minbase ${BASE_SUITE} +${BASE_PACKAGES}"
# Without python3 in the base (BASE_PACKAGES=ca-certificates), the Dockerfile installs it with apt:
# that is how its fallback for Python-less base images is exercised here.
case ",$BASE_PACKAGES," in *,python3-venv,*) with_python=1 ;; *) with_python=0 ;; esac
label=org.textgen.base-spec
# One cached tarball per base image name (e.g. base-debian-bookworm.tar).
tarball="$CONTAINER_CACHE_DIR/base-$(printf '%s' "${BASE_IMAGE_LOCAL#localhost/}" | tr -c 'A-Za-z0-9._\n-' '-').tar"
stamp="$tarball.spec"

image_spec() {
    podman image inspect --format "{{ index .Labels \"$label\" }}" "$BASE_IMAGE_LOCAL" 2>/dev/null || true
}

if [ "${FORCE_BASE:-0}" != 1 ] && [ "$(image_spec)" = "$spec" ]; then
    log "base image $BASE_IMAGE_LOCAL is up to date ($spec); not rebuilding"
    exit 0
fi

# The first http(s) URI of an enabled apt source whose suites include $BASE_SUITE exactly.
# Reads deb822 *.sources and one-line *.list files, the ones apt itself reads.
host_mirror() {
    local f
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        awk -v suite="$BASE_SUITE" '
            function flush() {
                if (enabled && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) {
                    n = split(uris, u, " ")
                    for (i = 1; i <= n; i++) if (u[i] ~ /^https?:\/\//) { print u[i]; exit }
                }
                types = ""; uris = ""; suites = ""; enabled = 1
            }
            BEGIN { enabled = 1 }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[ \t]+/, "")
                if (key == "types") types = $0
                else if (key == "uris") uris = $0
                else if (key == "suites") suites = $0
                else if (key == "enabled" && tolower($0) == "no") enabled = 0
            }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$BASE_SUITE" \
            '$1 == "deb" && $3 == suite && $2 ~ /^https?:\/\// { print $2 }'
    done
    shopt -u nullglob
}

if [ "${FORCE_BASE:-0}" = 1 ] || [ ! -s "$tarball" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$spec" ]; then
    mirror="${BASE_MIRROR:-$(host_mirror | head -n1)}"
    [ -n "$mirror" ] || die "no apt source for suite '$BASE_SUITE' found in /etc/apt/sources.list.d/ (set BASE_MIRROR=URL)"
    rootfs="$CONTAINER_CACHE_DIR/base-rootfs"
    rm -rf "$rootfs" "$tarball" "$stamp"
    log "debootstrap $BASE_SUITE (minbase, +$BASE_PACKAGES) from $mirror"
    t0="$(now)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" "$mirror" \
        >"$CONTAINER_CACHE_DIR/debootstrap.log" 2>&1 || {
        tail -n 40 "$CONTAINER_CACHE_DIR/debootstrap.log" >&2
        tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        die "debootstrap failed (full log: $CONTAINER_CACHE_DIR/debootstrap.log)"
    }
    if [ "$with_python" = 1 ]; then
        chroot "$rootfs" python3 -c 'import ensurepip, venv, sys; assert sys.version_info[:2] >= (3, 11), sys.version' \
            || die "the debootstrapped rootfs has no usable python3 (>= 3.11) with venv/ensurepip"
    fi
    # No package caches or lists in the image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/debootstrap
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" . || die "packing $rootfs failed"
    mv -f "$tarball.tmp" "$tarball"
    printf '%s\n' "$spec" >"$stamp"
    rm -rf "$rootfs"
    log "base rootfs packed in $(elapsed "$t0") s: $tarball ($(du -h "$tarball" | cut -f1))"
else
    log "reusing cached $tarball"
fi

t0="$(now)"
podman import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL $label=\"$spec\"" \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$BASE_IMAGE_LOCAL" >/dev/null || die "podman import $tarball failed"
[ "$(image_spec)" = "$spec" ] || die "imported $BASE_IMAGE_LOCAL does not carry label $label=\"$spec\""
if [ "$with_python" = 1 ]; then
    podman run --rm --network host "$BASE_IMAGE_LOCAL" python3 -c 'import sys, venv; print("base python", sys.version.split()[0])' \
        || die "the base image $BASE_IMAGE_LOCAL cannot run python3"
else
    podman run --rm --network host "$BASE_IMAGE_LOCAL" true || die "the base image $BASE_IMAGE_LOCAL cannot run a command"
fi
log "base image $BASE_IMAGE_LOCAL imported in $(elapsed "$t0") s"
