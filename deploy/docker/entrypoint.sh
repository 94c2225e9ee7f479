#!/bin/sh
# The kv image's entrypoint.
#
#   docker run kv:dev /data/FILE [kv serve flags]   -> kv serve /data/FILE ...
#   docker run kv:dev --root /var/lib/kv            -> kv serve --root /var/lib/kv
#   docker run kv:dev publish /data/new --root ...  -> kv publish ... (any kv command)
#
# A first argument that is a bare lower-case word and not a file is a kv
# command (gen, build, verify, inspect, serve, get, stats, publish, rollback,
# reload, deploy); anything else is handed to `kv serve`. `exec` keeps kv the
# container's main process, so `docker stop` (SIGTERM) and `docker kill -s HUP`
# reach the gunicorn master directly. The server logs to stdout.
set -eu

case "${1:-}" in
    [a-z]*)
        case "$1" in
            *[!a-z-]*) ;;
            *)
                if [ ! -e "$1" ]; then
                    if [ "$1" = serve ]; then shift; exec kv serve "$@" 2>&1; fi
                    # `--reload` signals the pid in the root's kv.pid; in a pid
                    # namespace of our own that number means nothing (pid 1 would
                    # be this very process). Refuse instead of signalling ourselves.
                    if [ "$$" = 1 ]; then
                        reload=no
                        [ "$1" = reload ] && reload=yes
                        for a in "$@"; do [ "$a" = --reload ] && reload=yes; done
                        if [ "$reload" = yes ]; then
                            echo "kv: cannot reload from a container with its own pid namespace: run this container" \
                                 "with --pid container:SERVER (sharing the server's), or publish without --reload" \
                                 "and then: docker kill -s HUP SERVER" >&2
                            exit 2
                        fi
                    fi
                    exec kv "$@"
                fi
                ;;
        esac
        ;;
esac
exec kv serve "$@" 2>&1
