#!/usr/bin/env bash
# A Docker engine of our own, for `make image` and the container tests on a
# machine where none answers: Debian's dockerd with its own data root, exec
# root, pid file and socket under one directory, so it disturbs no other engine
# and keeps its images between runs (the build cache is what makes a warm
# test run fast).
#
#   deploy/docker/private-dockerd.sh start   # prints DOCKER_HOST=unix://...; idempotent
#   deploy/docker/private-dockerd.sh stop    # stops it (images stay in the directory)
#   deploy/docker/private-dockerd.sh host    # the DOCKER_HOST it would use
#
# KV_DOCKERD_DIR chooses the directory (default /var/tmp/kv-dockerd). Needs
# root; installs Debian's docker.io with apt-get when dockerd is missing.
set -euo pipefail

DIR=${KV_DOCKERD_DIR:-/var/tmp/kv-dockerd}
SOCK=$DIR/docker.sock
HOST=unix://$SOCK
PIDFILE=$DIR/dockerd.pid
LOG=$DIR/dockerd.log

answers() { DOCKER_HOST=$HOST docker version >/dev/null 2>&1; }

need_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        echo "private-dockerd: installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

start() {
    if answers; then echo "DOCKER_HOST=$HOST"; return; fi
    [ "$(id -u)" = 0 ] || { echo "private-dockerd: starting dockerd needs root" >&2; exit 1; }
    need_packages
    mkdir -p "$DIR/data" "$DIR/exec"
    if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
    # containerd is started by dockerd itself (its own, under the exec root).
    setsid dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$PIDFILE" \
        --host "$HOST" --log-level warn </dev/null >"$LOG" 2>&1 &
    for _ in $(seq 1 300); do
        if answers; then echo "DOCKER_HOST=$HOST"; return; fi
        if ! kill -0 $! 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "private-dockerd: dockerd did not start; its log ($LOG) ends:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid; pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    host) echo "DOCKER_HOST=$HOST" ;;
    *) echo "usage: $0 start|stop|host" >&2; exit 2 ;;
esac
