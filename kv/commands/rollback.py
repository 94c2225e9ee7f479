"""kv rollback --root DIR: point ROOT/current back at the previous generation."""

from __future__ import annotations

import argparse

from .. import settings
from .exits import Exit
from .reload import add_reload_options, logger

EXITS = {
    Exit.OK: "rolled back (the generation is printed on stdout)",
    Exit.FAILED: "refused or failed; current is unchanged",
    Exit.USAGE: "bad usage",
}
EXAMPLE = "kv rollback --root /var/lib/kv --reload"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, metavar="DIR", help="publish root")
    p.add_argument(
        "--force",
        action="store_true",
        help="roll back even if that discards writes made since the last "
        "publish or compaction (without it, kv rollback refuses and says how many)",
    )
    add_reload_options(p, with_flag=True)


def run(args: argparse.Namespace) -> int:
    from ..publish import PublishError, reload, rollback

    log = logger("rollback")
    try:
        gen = rollback(args.root, log=log, force=args.force)
        if args.reload:
            reload(args.root, settings.PID_FILE.value(args.pid_file), log=log, wait=args.wait)
    except (PublishError, OSError) as e:
        log(f"failed: {e}")
        return Exit.FAILED
    print(gen)
    return Exit.OK
