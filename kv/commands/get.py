"""kv get KEY [KEY ...]: one key prints its raw value; several use one batch
request and print `key<TAB>value` lines. Exit 0 all found, 1 some missing,
2 bad usage or malformed key, 3 server unreachable (refused, dropped, or no
answer within --timeout)."""

import argparse
import os
import sys

from ..errors import InvalidKey


def server_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a server URL: it must start with http:// or https://")
    return text


def seconds(text: str) -> float:
    from ..client import positive_seconds

    try:
        return positive_seconds(text, "--timeout")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_url_argument(p):
    """--url and --timeout: where the server is and how long to wait for it."""
    p.add_argument("--url", type=server_url, default=os.environ.get("KV_URL", "http://127.0.0.1:8000"),
                   help="server URL (default http://127.0.0.1:8000, or KV_URL)")
    p.add_argument("--timeout", type=seconds, metavar="SECONDS", default=os.environ.get("KV_TIMEOUT", "5"),
                   help="seconds to wait for the server to accept and to answer (default 5, or KV_TIMEOUT); "
                        "a server silent that long counts as unreachable (exit 3)")


def add_arguments(p):
    p.add_argument("keys", nargs="+", metavar="KEY", help="UUID key(s)")
    add_url_argument(p)


def run(args) -> int:
    from ..client import Client, ServerError, ServerUnreachable

    out = sys.stdout.buffer
    try:
        with Client(args.url, timeout=args.timeout) as c:
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
