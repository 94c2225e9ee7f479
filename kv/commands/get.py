"""kv get KEY [KEY ...]: one key prints its raw value; several use one batch
request and print `key<TAB>value` lines. Exit 0 all found, 1 some missing,
2 bad usage or malformed key, 3 server unreachable."""

import os
import sys

from ..errors import InvalidKey


def add_url_argument(p):
    p.add_argument("--url", default=os.environ.get("KV_URL", "http://127.0.0.1:8000"),
                   help="server URL (default http://127.0.0.1:8000, or KV_URL)")


def add_arguments(p):
    p.add_argument("keys", nargs="+", metavar="KEY", help="UUID key(s)")
    add_url_argument(p)


def run(args) -> int:
    from ..client import Client, ServerError, ServerUnreachable

    out = sys.stdout.buffer
    try:
        with Client(args.url) as c:
            if len(args.keys) == 1:
                value = c.get(args.keys[0])
                if value is None:
                    print(f"kv get: {args.keys[0]}: not found", file=sys.stderr)
                    return 1
                out.write(value + (b"\n" if out.isatty() else b""))
                return 0
            found = c.get_many(args.keys)
    except InvalidKey as e:
        print(f"kv get: {e}", file=sys.stderr)
        return 2
    except ServerUnreachable as e:
        print(f"kv get: {e}", file=sys.stderr)
        return 3
    except ServerError as e:
        print(f"kv get: server error {e}", file=sys.stderr)
        return 3 if e.status >= 500 else 2
    missing = 0
    for k in args.keys:
        if k in found:
            out.write(k.encode() + b"\t" + found[k] + b"\n")
        else:
            missing += 1
            print(f"kv get: {k}: not found", file=sys.stderr)
    return 1 if missing else 0
