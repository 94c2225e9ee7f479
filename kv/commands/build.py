"""kv build DATA [-o TABLE] (also: python build_table.py DATA [-o TABLE])"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import DataFormatError
from ..options import BuildOptions
from .exits import Exit

EXITS = {
    Exit.OK: "table(s) written",
    Exit.FAILED: "bad data, or the data file or table cannot be read or written; no table written",
    Exit.USAGE: "bad usage",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", metavar="DATA", help="data file: `UUID value` lines, `key<TAB>value` lines (.tsv) or JSON lines (.jsonl); see --format"
    )
    p.add_argument("-o", "--output", metavar="TABLE", help="table file to write (default: DATA with suffix .kvt)")
    BuildOptions.add_arguments(p)
    p.add_argument("--shards", type=int, default=1, metavar="N", help="split into N shard tables by key prefix (power of two, up to 256)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar (default: when stderr is a terminal)"
    )
    p.add_argument("--json", action="store_true", help="print the build report as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from ..build import build_table, install_sigterm_cleanup

    install_sigterm_cleanup()
    options = BuildOptions.from_args(args)  # the parser has checked each flag
    try:
        if args.shards != 1:
            from ..shard import build_shards

            reports = build_shards(args.data, args.output, args.shards, options, progress=args.progress)
        else:
            reports = [build_table(args.data, args.output, options, progress=args.progress)]
    except (DataFormatError, ValueError) as e:
        print(f"kv build: {e}", file=sys.stderr)
        print("kv build: no table written", file=sys.stderr)
        return Exit.FAILED
    except FileNotFoundError as e:
        print(f"kv build: {e.filename or args.data}: no such file or directory", file=sys.stderr)
        return Exit.FAILED
    except OSError as e:  # a directory, no permission, disk full: say so, no traceback
        print(f"kv build: {e.filename or args.data}: {e.strerror or e}", file=sys.stderr)
        print("kv build: no table written", file=sys.stderr)
        return Exit.FAILED
    for r in reports:
        print(r.summary(), file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(), indent=2, default=str))
    return Exit.OK
