"""kv gen N -o FILE [--seed S]"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..report import plural
from .exits import Exit

EXITS = {Exit.OK: "written", Exit.FAILED: "cannot write the file", Exit.USAGE: "bad usage"}
EXAMPLE = "kv gen 10000 --seed 42 -o example.data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("count", type=int, metavar="N", help="number of records")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="data file to write ('-' for stdout)")
    p.add_argument("--seed", type=int, default=0, help="random seed, zero or more; the same seed gives the same file (default 0)")
    p.add_argument(
        "--keys",
        choices=["uuid", "string"],
        default="uuid",
        help="uuid: `UUID value` lines (default); string: `key<TAB>value` lines (a .tsv file) with keys of "
        "8-40 characters of [a-z0-9:/_-.]",
    )


def run(args: argparse.Namespace) -> int:
    from ..gen import generate_file

    if args.count < 0:
        print("kv gen: N must be zero or more", file=sys.stderr)
        return Exit.USAGE
    if args.seed < 0:
        print("kv gen: --seed must be zero or more", file=sys.stderr)
        return Exit.USAGE
    t0 = time.perf_counter()
    try:
        size = generate_file(args.count, args.output, seed=args.seed, keys=args.keys)
    except BrokenPipeError:  # `kv gen N -o - | head`: the reader has had enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return Exit.OK
    except OSError as e:
        print(f"kv gen: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return Exit.FAILED
    if args.output != "-":
        print(
            f"wrote {plural(args.count, 'record')} ({size:,} bytes) to {args.output} in {time.perf_counter() - t0:.2f} s", file=sys.stderr
        )
    return Exit.OK
