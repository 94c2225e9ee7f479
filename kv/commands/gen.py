"""kv gen N -o FILE [--seed S]"""

import sys
import time


def add_arguments(p):
    p.add_argument("count", type=int, metavar="N", help="number of records")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="data file to write ('-' for stdout)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file (default 0)")


def run(args) -> int:
    from ..gen import generate_file

    if args.count < 0:
        print("kv gen: N must be zero or more", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    size = generate_file(args.count, args.output, seed=args.seed)
    if args.output != "-":
        print(f"wrote {args.count:,} records ({size:,} bytes) to {args.output} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0
