"""kv verify TABLE"""

import sys
import time

from ..errors import TableCorrupt


def add_arguments(p):
    p.add_argument("tables", nargs="+", metavar="TABLE", help="table file(s) to check")


def run(args) -> int:
    from ..table import open_table

    status = 0
    for path in args.tables:
        t0 = time.perf_counter()
        try:
            with open_table(path) as t:
                t.verify()
                print(f"{path}: ok, {len(t):,} records, generation {t.generation}, checked in {time.perf_counter() - t0:.2f} s")
        except TableCorrupt as e:
            print(f"{path}: CORRUPT: {e}", file=sys.stderr)
            status = 1
        except OSError as e:  # missing or unreadable: not a verdict on its contents
            print(f"{path}: cannot read: {e.strerror or e}", file=sys.stderr)
            status = 1
    return status
