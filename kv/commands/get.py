"""kv get KEY [KEY ...]: look keys up on a server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import settings
from ..errors import InvalidKey
from .exits import Exit, for_status

if TYPE_CHECKING:
    from ..client import Client

EXITS = {
    Exit.OK: "every key found",
    Exit.MISSING: "a key not found",
    Exit.USAGE: "bad usage or malformed key",
    Exit.UNREACHABLE: "server unreachable (refused, dropped, or no answer within --timeout) or failing (5xx)",
    Exit.REFUSED: "the server refused: no or a wrong read token (401, 403)",
}
EXAMPLE = "kv get 3479d894-3271-4935-88cf-a06f3cbb80a5; kv get 'user:42' 'a key/with spaces'; kv get -- -KEY (a key starting with '-')"

OUTPUT = """\
output: one KEY prints its value's raw bytes, with no newline added (so
`kv get KEY > file` holds exactly the value), except on a terminal, where a
newline ends it. Several KEYs are one batch request and print one
`KEY<TAB>value` line each, in the order given; a key not found is named on
stderr. In those lines a key's backslash, TAB, newline and carriage return
print as \\\\, \\t, \\n and \\r, so each line splits at its first TAB; values
print as they are (a value holding a newline spans lines: ask for it alone).
Keys are any strings (quote them for the shell); the client percent-encodes
them in the URL."""


def escape_key(key: str) -> str:
    """A key as `kv get` prints it before a TAB: backslash, TAB, LF, CR escaped."""
    return key.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """--url, --timeout, --token, --cacert, --cert, --key: where the server is,
    how long to wait for it, and how to prove who the client is."""
    for s in settings.CLIENT_SETTINGS:
        s.add_to(p)


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"timeout": args.timeout, "token": args.token, "cacert": args.cacert, "cert": args.cert, "key": args.key}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "keys", nargs="+", metavar="KEY", help="key(s): UUIDs, or any strings for a string-key table; after `--`, a key may start with '-'"
    )
    add_client_arguments(p)
    p.description = f"{p.description}\n\n{OUTPUT}"


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer

    def action(c: Client) -> int:
        if len(args.keys) == 1:
            value = c.get(args.keys[0])
            if value is None:
                print(f"kv get: {args.keys[0]}: not found", file=sys.stderr)
                return Exit.MISSING
            out.write(value + (b"\n" if out.isatty() else b""))
            return Exit.OK
        found = c.get_many(args.keys)
        missing = 0
        for k in args.keys:
            if k in found:
                out.write(escape_key(k).encode() + b"\t" + found[k] + b"\n")
            else:
                missing += 1
                print(f"kv get: {k}: not found", file=sys.stderr)
        return Exit.MISSING if missing else Exit.OK

    return with_client(action, args, "get")


def with_client(action: Callable[[Client], int], args: argparse.Namespace, name: str) -> int:
    """Run `action(client)` on a client for the command's flags and return its
    exit status; the client's errors are one line on stderr and their own
    status instead (kv get, kv stats, kv set, kv delete)."""
    from ..client import Client, ServerError, ServerUnreachable, WriteRefusedError

    try:
        with Client(args.url, **client_kwargs(args)) as c:
            return action(c)
    except InvalidKey as e:
        print(f"kv {name}: {e}", file=sys.stderr)
        return Exit.USAGE
    except WriteRefusedError as e:
        print(f"kv {name}: refused, {e}", file=sys.stderr)
        return for_status(e.status)
    except ServerUnreachable as e:
        print(f"kv {name}: {e}", file=sys.stderr)
        return Exit.UNREACHABLE
    except ServerError as e:
        print(f"kv {name}: server error {e}", file=sys.stderr)
        return for_status(e.status)
