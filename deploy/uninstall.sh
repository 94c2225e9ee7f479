#!/usr/bin/env bash
# Remove kv: stop and disable the service, remove its units and the prefix.
# Published data is kept unless --purge is given. Same options as install.sh:
#   sudo deploy/uninstall.sh [--prefix /opt/kv] [--data-dir /var/lib/kv] [--purge] [--destdir DIR]
exec "$(dirname "$0")/install.sh" --uninstall "$@"
