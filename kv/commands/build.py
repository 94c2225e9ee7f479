"""kv build DATA [-o TABLE] (also: python build_table.py DATA [-o TABLE])"""

import json
import sys

from ..errors import DataFormatError

EXITS = {0: "table(s) written", 1: "bad data, or the data file or table cannot be read or written; no table written", 2: "bad usage"}


def add_arguments(p):
    p.add_argument("data", metavar="DATA", help="data file of `UUID value` lines")
    p.add_argument("-o", "--output", metavar="TABLE", help="table file to write (default: DATA with suffix .kvt)")
    p.add_argument("--skip-invalid", action="store_true", help="skip malformed lines (reported) instead of stopping")
    p.add_argument(
        "--on-duplicate",
        choices=["error", "first", "last"],
        default="error",
        help="a key on two lines: stop (error, the default), keep the first, or keep the last",
    )
    cr = p.add_mutually_exclusive_group()
    cr.add_argument("--strip-cr", action="store_true", help="remove the CR of CR LF line endings")
    cr.add_argument("--keep-cr", action="store_true", help="keep a trailing CR as the last byte of the value")
    p.add_argument("--load-factor", type=float, default=0.8, help="records per home slot, 0.1-0.95 (default 0.8)")
    p.add_argument("--shards", type=int, default=1, metavar="N", help="split into N shard tables by key prefix (power of two, up to 256)")
    p.add_argument("--progress", action=argparse_bool(), default=None, help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--json", action="store_true", help="print the build report as JSON on stdout")


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def run(args) -> int:
    from ..build import build_table, install_sigterm_cleanup

    install_sigterm_cleanup()
    options = dict(
        skip_invalid=args.skip_invalid,
        on_duplicate=args.on_duplicate,
        strip_cr=args.strip_cr,
        keep_cr=args.keep_cr,
        load_factor=args.load_factor,
        progress=args.progress,
    )
    try:
        if args.shards != 1:
            from ..shard import build_shards

            reports = build_shards(args.data, args.output, shards=args.shards, **options)
        else:
            reports = [build_table(args.data, args.output, **options)]
    except (DataFormatError, ValueError) as e:
        print(f"kv build: {e}", file=sys.stderr)
        print("kv build: no table written", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"kv build: {e.filename or args.data}: no such file or directory", file=sys.stderr)
        return 1
    except OSError as e:  # a directory, no permission, disk full: say so, no traceback
        print(f"kv build: {e.filename or args.data}: {e.strerror or e}", file=sys.stderr)
        print("kv build: no table written", file=sys.stderr)
        return 1
    for r in reports:
        print(r.summary(), file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(), indent=2, default=str))
    return 0
