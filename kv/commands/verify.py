"""kv verify TABLE"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import TableCorrupt
from .exits import Exit

EXITS = {Exit.OK: "every table is sound", Exit.FAILED: "a table is corrupt, missing or unreadable", Exit.USAGE: "bad usage"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tables", nargs="+", metavar="TABLE", help="table file(s) to check")


def run(args: argparse.Namespace) -> int:
    from ..table import open_table

    status = 0
    for path in args.tables:
        t0 = time.perf_counter()
        try:
            with open_table(path) as t:
                t.verify()
                print(f"{path}: ok, {len(t):,} records, generation {t.generation}, checked in {time.perf_counter() - t0:.2f} s")
        except TableCorrupt as e:  # its message starts with the file's name already
            print(f"{path}: CORRUPT: {_without_path(str(e), path)}", file=sys.stderr)
            status = 1
        except OSError as e:  # missing or unreadable: not a verdict on its contents
            print(f"{path}: cannot read: {e.strerror or e}", file=sys.stderr)
            status = 1
    return status


def _without_path(message: str, path: str) -> str:
    for prefix in (f"{path}: ", f"{Path(path)}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
