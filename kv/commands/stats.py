"""kv stats: the server's statistics, summed over its workers."""

import json
import sys

from .get import add_url_argument


def add_arguments(p):
    add_url_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from ..client import Client, ServerError, ServerUnreachable

    try:
        with Client(args.url, timeout=args.timeout) as c:
            s = c.stats()
    except (ServerUnreachable, ServerError) as e:
        print(f"kv stats: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    width = max(map(len, s), default=0)
    for k, v in s.items():
        if isinstance(v, dict):
            v = json.dumps(v)
        elif isinstance(v, int) and k not in ("pid", "worker"):  # counts get separators, ids do not
            v = f"{v:,}"
        print(f"{k:<{width}}  {v}")
    return 0
