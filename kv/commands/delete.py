"""kv delete KEY [KEY ...]: delete keys in one atomic write."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .exits import Exit
from .get import add_client_arguments
from .set import write

if TYPE_CHECKING:
    from ..client import Client

EXITS = {
    Exit.OK: "every key deleted",
    Exit.MISSING: "some key was not there (the others are deleted)",
    Exit.USAGE: "bad usage, a malformed key (nothing is deleted), or more keys than the server's --max-batch",
    Exit.UNREACHABLE: "server unreachable (refused, dropped, or no answer within --timeout)",
    Exit.REFUSED: "the server refused the write: no or wrong token (401, 403), or it takes no writes (405)",
}
EXAMPLE = "kv delete 3479d894-3271-4935-88cf-a06f3cbb80a5 --token $KV_TOKEN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="+", metavar="KEY", help="key(s) to delete, all in one write; after `--`, a key may start with '-'")
    add_client_arguments(p)


def run(args: argparse.Namespace) -> int:
    def action(c: Client) -> int:
        missing = c.delete(*args.keys)
        for k in missing:
            print(f"kv delete: {k}: not found", file=sys.stderr)
        return Exit.MISSING if missing else Exit.OK

    return write(action, args, "delete")
