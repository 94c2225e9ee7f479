"""kv stats: the server's statistics, summed over its workers."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .exits import Exit
from .get import add_client_arguments, with_client

if TYPE_CHECKING:
    from ..client import Client

EXITS = {
    Exit.OK: "printed",
    Exit.USAGE: "bad usage, or a URL where no kv server answers (4xx)",
    Exit.UNREACHABLE: "server unreachable or failing (5xx)",
    Exit.REFUSED: "the server refused: no or a wrong read token (401, 403)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    def action(c: Client) -> int:
        s = c.stats()
        if args.json:
            print(json.dumps(s, indent=2))
            return Exit.OK
        width = max(map(len, s), default=0)
        for k, v in s.items():
            if isinstance(v, dict):
                v = json.dumps(v)
            elif isinstance(v, int) and k not in ("pid", "worker"):  # counts get separators, ids do not
                v = f"{v:,}"
            print(f"{k:<{width}}  {v}")
        return Exit.OK

    return with_client(action, args, "stats")
