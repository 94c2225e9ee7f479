#!/usr/bin/env bash
# `make image`: build kv:dev (Dockerfile) and kv-nginx:dev (deploy/docker/nginx.Dockerfile).
#
# Where the default base images can be pulled, this is a plain `docker build`.
# Where they cannot (no registry reachable, as on the development machines),
# it first makes Debian bases from Debian packages with debootstrap, using the
# mirror apt uses, and imports them:
#   kv-debian:bookworm        minbase + python3, python3-venv (the runtime stage)
#   kv-debian-build:bookworm  the same + gcc, libc6-dev, python3-dev (the build stage)
#   kv-debian-nginx:bookworm  the same base + nginx-light (the nginx image)
# (kept in the engine and reused; about a minute the first time), and resolves
# the Python packages on the host into deploy/docker/wheelhouse, which the
# Dockerfile installs from with --no-index: nothing inside a build container
# needs the network.
#
# Environment: DOCKER (the client, default docker), KV_IMAGE (kv:dev),
# KV_NGINX_IMAGE (kv-nginx:dev), BASE_IMAGE (python:3.11-slim-bookworm),
# NGINX_BASE_IMAGE (nginx:stable-bookworm), KV_LOCAL_BASE=1 (skip the pull),
# KV_DEBIAN_MIRROR (default: the first Debian mirror in apt's sources).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOCKER=${DOCKER:-docker}
IMAGE=${KV_IMAGE:-kv:dev}
NGINX_IMAGE=${KV_NGINX_IMAGE:-kv-nginx:dev}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
NGINX_BASE_IMAGE=${NGINX_BASE_IMAGE:-nginx:stable-bookworm}
LOCAL_BASE=kv-debian:bookworm
LOCAL_BUILD=kv-debian-build:bookworm
LOCAL_NGINX=kv-debian-nginx:bookworm
WHEELHOUSE=deploy/docker/wheelhouse

say() { echo "make image: $*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
can_get() { have_image "$1" || { [ "${KV_LOCAL_BASE:-}" != 1 ] && "$DOCKER" pull -q "$1" >/dev/null 2>&1; }; }

if ! "$DOCKER" version >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        say "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start one, or run as root to start" \
            "a private one: sudo deploy/docker/private-dockerd.sh start"
        exit 1
    fi
    say "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}): starting a private dockerd"
    export "$(deploy/docker/private-dockerd.sh start)"
    say "it stays running for the image; use it with: export $(deploy/docker/private-dockerd.sh host)" \
        "(stop: deploy/docker/private-dockerd.sh stop)"
fi

debian_mirror() {
    if [ -n "${KV_DEBIAN_MIRROR:-}" ]; then echo "$KV_DEBIAN_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')
    echo "${m:-http://deb.debian.org/debian}"
}

# Make a root file system with debootstrap, add packages with apt-get in a
# chroot (on the host, whose network works), strip what a container never
# reads, and import it as an image.
make_debian_bases() {
    [ "$(id -u)" = 0 ] || { say "making the Debian base needs root (debootstrap, chroot)"; exit 1; }
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local mirror cache=/var/tmp/kv-debootstrap-cache
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /var/tmp/kv-rootfs.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$cache"
    say "debootstrap --variant=minbase --include=python3,python3-venv bookworm $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv --cache-dir="$cache" \
        bookworm "$tmp/base" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
        || { tail -n 20 "$tmp/debootstrap.log" >&2; exit 1; }
    cp -a "$tmp/base" "$tmp/build"
    cp -a "$tmp/base" "$tmp/nginx"
    add_packages "$tmp/build" gcc libc6-dev python3-dev
    add_packages "$tmp/nginx" nginx-light
    local d
    for d in base build nginx; do slim "$tmp/$d"; done
    tar -C "$tmp/base" -c . | "$DOCKER" import - "$LOCAL_BASE" >/dev/null
    tar -C "$tmp/build" -c . | "$DOCKER" import - "$LOCAL_BUILD" >/dev/null
    tar -C "$tmp/nginx" -c . | "$DOCKER" import - "$LOCAL_NGINX" >/dev/null
    say "imported $LOCAL_BASE, $LOCAL_BUILD, $LOCAL_NGINX"
    rm -rf "$tmp"
    trap - EXIT
}

add_packages() {
    local root=$1; shift
    say "apt-get install $* (in a chroot of the base)"
    chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null" 2>&1 \
        | grep -v -e 'debconf: delaying' -e '/dev/pts' >&2 || true
    chroot "$root" sh -c "dpkg -s $* >/dev/null" || { say "apt-get install $* failed"; exit 1; }
}

slim() {
    local root=$1
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/log/apt/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
}

# Python packages for the image, resolved on the host: kv's dependencies and its
# build backend, as wheels for the image's Python (the host's must be the same
# minor version). Redone only when pyproject.toml changes.
fill_wheelhouse() {
    local base=$1 py want have stamp
    py=${PYTHON:-python3}
    want=$("$DOCKER" run --rm --entrypoint python3 "$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$want" != "$have" ]; then
        say "the image's Python is $want but the host's ($py) is $have: set PYTHON to a python$want"
        exit 1
    fi
    stamp="$want $(sha256sum pyproject.toml | cut -c1-16)"
    if [ "$(cat "$WHEELHOUSE/.stamp" 2>/dev/null)" = "$stamp" ] && ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1; then
        say "wheelhouse up to date ($(ls "$WHEELHOUSE"/*.whl | wc -l) wheels)"
        return
    fi
    say "resolving Python packages on the host into $WHEELHOUSE (pip wheel, Python $have)"
    rm -f "$WHEELHOUSE"/*.whl "$WHEELHOUSE/.stamp"
    local reqs
    reqs=$("$py" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"] + ["wheel"]))')
    # shellcheck disable=SC2086
    echo "$reqs" | "$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELHOUSE" -r /dev/stdin 2>&1 \
        | grep -v "^WARNING: Location .* is ignored" >&2 || true
    ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1 || { say "pip wheel made no wheels"; exit 1; }
    echo "$stamp" >"$WHEELHOUSE/.stamp"
}

args=()
nginx_base=$NGINX_BASE_IMAGE
if can_get "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE; Python packages from the wheelhouse if it has wheels, else from PyPI"
else
    say "cannot pull $BASE_IMAGE: building on a Debian base made here from Debian packages"
    if have_image "$LOCAL_BASE" && have_image "$LOCAL_BUILD" && have_image "$LOCAL_NGINX"; then
        say "reusing $LOCAL_BASE, $LOCAL_BUILD and $LOCAL_NGINX (docker rmi them to remake)"
    else
        make_debian_bases
    fi
    fill_wheelhouse "$LOCAL_BASE"
    args=(--build-arg "BASE_IMAGE=$LOCAL_BASE" --build-arg "BUILD_IMAGE=$LOCAL_BUILD")
    export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}  # the classic builder: local images, nothing to pull
fi
can_get "$NGINX_BASE_IMAGE" || nginx_base=$LOCAL_NGINX
if [ "$nginx_base" = "$LOCAL_NGINX" ] && ! have_image "$LOCAL_NGINX"; then make_debian_bases; fi

build() {  # docker build ARGS, its output shown only when it fails
    local log; log=$(mktemp /tmp/kv-image-build.XXXXXX)
    say "docker build $*"
    if ! "$DOCKER" build "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2; rm -f "$log"; say "docker build failed"; exit 1
    fi
    rm -f "$log"
}
build -t "$IMAGE" "${args[@]}" .
build -t "$NGINX_IMAGE" --build-arg "NGINX_BASE_IMAGE=$nginx_base" -f deploy/docker/nginx.Dockerfile .
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
say "built $IMAGE ($((size / 1048576)) MiB) and $NGINX_IMAGE"
