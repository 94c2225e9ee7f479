#!/usr/bin/env bash
# Install kv as a systemd service.
#
#   sudo deploy/install.sh [--prefix /opt/kv] [--data-dir /var/lib/kv]
#   sudo deploy/install.sh --uninstall [--purge]      (or deploy/uninstall.sh)
#
#   --prefix DIR     venv and docs (default /opt/kv)
#   --data-dir DIR   publish root the service serves read-only (default /var/lib/kv)
#   --destdir DIR    stage everything under DIR (packaging, tests); runs no systemctl
#   --python PY      interpreter for the venv (default python3, >= 3.11)
#   --uninstall      stop and remove the service, its units and the prefix (keeps data)
#   --purge          with --uninstall: remove the data directory too
#
# Idempotent: running it again upgrades the package in the venv and rewrites
# the units. It never starts the service (publish a table first) and never
# touches published tables.
set -euo pipefail

PREFIX=/opt/kv
DATA=/var/lib/kv
DESTDIR="${DESTDIR:-}"
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
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PREFIX$DATA" in *'#'*|*' '*) echo "install.sh: --prefix and --data-dir may not contain '#' or spaces" >&2; exit 2 ;; esac
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
case "$DATA" in /*) ;; *) echo "install.sh: --data-dir must be an absolute path" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
UNIT_DIR="$DESTDIR/etc/systemd/system"
UNITS="kv.service kv.socket"
say() { echo "install.sh: $*"; }
# systemctl only for a real install on a machine that runs systemd.
use_systemctl() { [ -z "$DESTDIR" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or stage with --destdir DIR" >&2
  exit 1
fi

if [ "$UNINSTALL" = 1 ]; then
  if use_systemctl; then
    systemctl disable --now kv.socket kv.service 2>/dev/null || true
    say "stopped and disabled kv.service, kv.socket"
  fi
  for u in $UNITS; do
    if [ -e "$UNIT_DIR/$u" ]; then rm -f "$UNIT_DIR/$u"; say "removed $UNIT_DIR/$u"; fi
  done
  if use_systemctl; then systemctl daemon-reload; fi
  if [ -e "${DESTDIR}${PREFIX}" ]; then rm -rf "${DESTDIR}${PREFIX}"; say "removed ${DESTDIR}${PREFIX}"; fi
  if [ "$PURGE" = 1 ]; then
    rm -rf "${DESTDIR}${DATA}"; say "removed ${DESTDIR}${DATA} (--purge)"
  else
    say "kept the data in ${DESTDIR}${DATA} (remove it with --purge)"
  fi
  exit 0
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || { echo "install.sh: $PY is missing or older than 3.11 (pass --python)" >&2; exit 1; }

VENV="${DESTDIR}${PREFIX}/venv"
if [ -x "$VENV/bin/python" ]; then
  say "upgrading kv in $VENV"
else
  "$PY" -m venv "$VENV"
  say "created venv $VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$REPO"
say "installed $("$VENV/bin/python" "$VENV/bin/kv" --version)"
if [ -n "$DESTDIR" ]; then
  # A staged venv must work once moved to PREFIX: pip wrote the staging path
  # into the scripts' #! lines and the activate scripts; point them at PREFIX.
  # (pyvenv.cfg names only the base interpreter; site-packages holds no paths.)
  grep -rlIF "${DESTDIR}${PREFIX}/venv" "$VENV/bin" | while read -r f; do
    sed -i "s#${DESTDIR}${PREFIX}/venv#${PREFIX}/venv#g" "$f"
  done
  say "rewrote the venv's scripts for ${PREFIX}/venv (relocatable from the staging directory)"
fi

install -d -m 0755 "${DESTDIR}${PREFIX}/share/doc/kv"
install -m 0644 "$REPO"/docs/*.md "${DESTDIR}${PREFIX}/share/doc/kv/"
say "installed docs into ${DESTDIR}${PREFIX}/share/doc/kv"

# The publish root: root-owned, world-readable, so the service's dynamic user
# reads it and cannot write it (the unit also mounts it read-only).
install -d -m 0755 "${DESTDIR}${DATA}" "${DESTDIR}${DATA}/generations"
say "data directory ${DESTDIR}${DATA}"

install -d -m 0755 "$UNIT_DIR"
for u in $UNITS; do
  sed -e "s#/opt/kv#${PREFIX}#g" -e "s#/var/lib/kv#${DATA}#g" "$REPO/deploy/$u" > "$UNIT_DIR/.$u.tmp"
  chmod 0644 "$UNIT_DIR/.$u.tmp"
  mv "$UNIT_DIR/.$u.tmp" "$UNIT_DIR/$u"
  say "installed $UNIT_DIR/$u"
done

if use_systemctl; then
  systemctl daemon-reload
  say "next: ${PREFIX}/venv/bin/kv publish DATA --root ${DATA} && systemctl enable --now kv.service"
else
  say "staged under ${DESTDIR:-/}; ran no systemctl"
fi
