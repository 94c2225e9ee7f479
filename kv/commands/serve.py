"""kv serve PATH | --root DIR: serve a table over HTTP (the work is kv/serve.py's)."""

from __future__ import annotations

import argparse
import sys

from .. import settings
from ..options import BuildOptions
from .exits import Exit

EXITS = {
    Exit.OK: "stopped (SIGTERM, SIGINT)",
    Exit.FAILED: "cannot serve: no such table, bad data, address in use, error in the config file",
    Exit.USAGE: "bad usage, or a bad KV_* value",
}
EXAMPLE = "kv serve example.data --bind 127.0.0.1:8000 --workers 2"
PRECEDENCE = """\
Each setting is taken from its flag, else its KV_* variable, else the gunicorn
configuration file (--config), else the default. Given a data file, the table
next to it (DATA.kvt) is served when it was built from this same file: as it
was built when no build option is given, else when built with those options
(otherwise it is rebuilt)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="PATH", help="data file or table (.kvt) to serve")
    p.add_argument(
        "--root",
        metavar="DIR",
        help="serve DIR/current (see kv publish) instead of PATH; running "
        "workers switch to what kv publish, kv rollback and compaction make current, within a second",
    )
    p.add_argument(
        "--writable",
        action="store_true",
        help="with --root: accept writes (PUT/DELETE /v1/keys/KEY, "
        "POST /v1/write) with the write token (KV_WRITE_TOKEN or --write-token-file); see docs/WRITES.md",
    )
    p.add_argument(
        "--keys",
        choices=("uuid", "string"),
        default=None,
        help="with --writable, for a root with no generation yet: the kind of keys it starts empty with (default uuid)",
    )
    for s in settings.SERVER_SETTINGS:
        s.add_to(p)
    BuildOptions.add_arguments(p, prefix="when PATH is a data file")
    p.description = f"{p.description}\n\n{PRECEDENCE}"


def run(args: argparse.Namespace) -> int:
    from ..serve import ServeError, serve

    try:
        options = BuildOptions.from_args(args) if BuildOptions.given(args) else None  # None: serve the table as built
    except ValueError as e:
        print(f"kv serve: {e}", file=sys.stderr)
        return Exit.USAGE
    try:
        serve(
            args.path,
            args.root,
            options,
            {s.name: getattr(args, s.name) for s in settings.SERVER_SETTINGS},
            writable=args.writable,
            keys=args.keys,
        )
    except ServeError as e:
        print(f"kv serve: {e}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK
