"""kv reload: SIGHUP a running server so new workers map ROOT/current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import settings
from .exits import Exit

EXITS = {
    Exit.OK: "reloaded",
    Exit.FAILED: "refused or failed (no pid file, server not running, bad current table)",
    Exit.USAGE: "bad usage",
}
EXAMPLE = "kv reload --root /var/lib/kv"


def add_reload_options(p: argparse.ArgumentParser, with_flag: bool) -> None:
    """--pid-file and --wait (and --reload, for publish and rollback)."""
    if with_flag:
        p.add_argument("--reload", action="store_true", help="then SIGHUP the server (as `kv reload` does)")
    settings.PID_FILE.add_to(
        p,
        help="the server's pid file",
        shown_default="the first that exists of ROOT/kv.pid, $RUNTIME_DIRECTORY/kv.pid, /run/kv/kv.pid",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="after SIGHUP, wait this long for the old workers to exit (0: do not wait; default 30)",
    )


def logger(command: str) -> Callable[[str], None]:
    return lambda m: print(f"kv {command}: {m}", file=sys.stderr)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", metavar="DIR", help="publish root (its kv.pid is one place the pid file is looked for)")
    add_reload_options(p, with_flag=False)


def run(args: argparse.Namespace) -> int:
    from ..publish import PublishError, reload

    log = logger("reload")
    try:
        reload(args.root, settings.PID_FILE.value(args.pid_file), log=log, wait=args.wait)
    except (PublishError, OSError) as e:
        log(f"failed: {e}")
        return Exit.FAILED
    return Exit.OK
