"""kv publish DATA_OR_TABLE --root DIR: build or copy in, verify, switch ROOT/current."""

from __future__ import annotations

import argparse
import time

from .. import settings
from ..options import BuildOptions
from ..publish import DEFAULT_KEEP  # kv.publish imports no heavy package at the top
from .exits import Exit
from .reload import add_reload_options, logger

EXITS = {
    Exit.OK: "published (the generation is printed on stdout)",
    Exit.FAILED: "refused or failed; current is unchanged",
    Exit.USAGE: "bad usage",
}
EXAMPLE = "kv publish new.data --root /var/lib/kv --reload (one line per step on stderr)"


def _keep_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1: rollback needs the previous generation")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="DATA_OR_TABLE", help="data file to build, or a table (.kvt) to copy in")
    p.add_argument("--root", required=True, metavar="DIR", help="publish root (what `kv serve --root` serves)")
    p.add_argument(
        "--keep",
        type=_keep_count,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"generations to keep besides the current one (default {DEFAULT_KEEP}, at least 1)",
    )
    BuildOptions.add_arguments(p, prefix="when DATA_OR_TABLE is a data file")
    add_reload_options(p, with_flag=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import DataFormatError
    from ..publish import PublishError, publish, reload

    log = logger("publish")
    t0 = time.perf_counter()
    try:
        options = BuildOptions.from_args(args)
    except ValueError as e:
        log(str(e))
        return Exit.USAGE
    try:
        gen = publish(args.source, args.root, keep=args.keep, log=log, options=options)
        if args.reload:
            reload(args.root, settings.PID_FILE.value(args.pid_file), log=log, wait=args.wait)
    except (PublishError, DataFormatError, OSError) as e:
        log(f"failed: {e}")
        return Exit.FAILED
    print(gen)
    log(f"done in {time.perf_counter() - t0:.2f} s")
    return Exit.OK
