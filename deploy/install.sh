#!/usr/bin/env bash
# Install kv as a systemd service.
#
#   sudo deploy/install.sh [--prefix /opt/kv] [--data-dir /var/lib/kv]
#   sudo deploy/install.sh --uninstall [--purge]
#
#   --prefix DIR     venv, docs (default /opt/kv)
#   --data-dir DIR   publish root the service serves read-only (default /var/lib/kv)
#   --destdir DIR    stage everything under DIR (packaging, tests); no systemctl
#   --python PY      interpreter for the venv (default python3, >= 3.11)
#   --uninstall      stop and remove the service and the prefix (keeps data)
#   --purge          with --uninstall: remove the data directory too
#
# Idempotent: running it again upgrades the venv and rewrites the unit.
set -euo pipefail

PREFIX=/opt/kv
DATA=/var/lib/kv
DESTDIR=""
PY=python3
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --data-dir) DATA="$2"; shift 2 ;;
    --destdir) DESTDIR="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
UNIT_DIR="$DESTDIR/etc/systemd/system"
use_systemctl() { [ -z "$DESTDIR" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; }

if [ "$UNINSTALL" = 1 ]; then
  if use_systemctl; then systemctl disable --now kv.service 2>/dev/null || true; fi
  rm -f "$UNIT_DIR/kv.service"
  if use_systemctl; then systemctl daemon-reload; fi
  rm -rf "${DESTDIR}${PREFIX}"
  if [ "$PURGE" = 1 ]; then rm -rf "${DESTDIR}${DATA}"; echo "removed $DATA"; fi
  echo "kv uninstalled from $PREFIX (data in $DATA $( [ "$PURGE" = 1 ] && echo removed || echo kept ))"
  exit 0
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "install.sh: $PY is older than 3.11" >&2; exit 1; }
echo "installing kv into ${DESTDIR}${PREFIX}"
mkdir -p "${DESTDIR}${PREFIX}/share/doc/kv" "$UNIT_DIR" "${DESTDIR}${DATA}/generations"
[ -x "${DESTDIR}${PREFIX}/venv/bin/python" ] || "$PY" -m venv "${DESTDIR}${PREFIX}/venv"
"${DESTDIR}${PREFIX}/venv/bin/pip" install --quiet --upgrade "$REPO"
cp "$REPO"/docs/*.md "${DESTDIR}${PREFIX}/share/doc/kv/"
# Tables must be readable by the service's dynamic user: world-readable, root-owned.
chmod 0755 "${DESTDIR}${DATA}" "${DESTDIR}${DATA}/generations"
sed -e "s#/opt/kv#${PREFIX}#g" -e "s#/var/lib/kv#${DATA}#g" "$REPO/deploy/kv.service" > "$UNIT_DIR/kv.service.tmp"
mv "$UNIT_DIR/kv.service.tmp" "$UNIT_DIR/kv.service"
if use_systemctl; then
  systemctl daemon-reload
  echo "next: ${PREFIX}/venv/bin/kv publish DATA --root ${DATA} && systemctl enable --now kv"
else
  echo "staged under ${DESTDIR:-/} (no systemctl run)"
fi
