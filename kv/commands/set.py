"""kv set KEY VALUE | kv set K1=V1 K2=V2 ... | kv set --file DATA: write keys, atomically."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidKey
from .exits import Exit, for_status
from .get import add_client_arguments, client_kwargs

if TYPE_CHECKING:
    from ..client import Client

EXITS = {
    Exit.OK: "written (the new generation is printed on stdout)",
    Exit.USAGE: "bad usage, a malformed key or data file, or more keys than the server's --max-batch",
    Exit.UNREACHABLE: "server unreachable (refused, dropped, or no answer within --timeout)",
    Exit.REFUSED: "the server refused the write: no or wrong token (401, 403), or it takes no writes (405)",
}
EXAMPLE = "kv set 3479d894-3271-4935-88cf-a06f3cbb80a5 hello --token $KV_TOKEN; kv set K1=V1 K2=V2; kv set --file changes.tsv"
FORMATS = ("uuid", "tsv", "jsonl")
USAGE = """\
forms: `kv set KEY VALUE` writes one key; `kv set K1=V1 K2=V2 ...` writes
several in one atomic write (each argument split at its first "="); `kv set
--file DATA` applies a data file in one atomic write: `UUID value` lines
(--format uuid), `key<TAB>value` lines (tsv) or JSON lines {"key": ...,
"value" or "value_base64": ...} (jsonl); by default from the file name
(.tsv, .jsonl), else uuid. Every write is all or nothing: a malformed key
changes nothing. The write token comes from --token or KV_TOKEN."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", nargs="*", metavar="KEY VALUE | KEY=VALUE", help="what to write")
    p.add_argument("--file", metavar="DATA", help="apply this data file in one atomic write")
    p.add_argument("--format", choices=FORMATS, default=None, help="the data file's format (default: from its name)")
    add_client_arguments(p)
    p.description = f"{p.description}\n\n{USAGE}"


def items_from_args(pairs: list[str]) -> dict[str, bytes]:
    """KEY VALUE, or KEY=VALUE ...; ValueError for anything else."""
    if pairs and all("=" in a for a in pairs):
        out: dict[str, bytes] = {}
        for a in pairs:
            k, _, v = a.partition("=")
            if k in out:
                raise ValueError(f"key {k!r} is given twice")
            out[k] = v.encode()
        return out
    if len(pairs) == 2:
        return {pairs[0]: pairs[1].encode()}
    raise ValueError("give KEY VALUE, or KEY=VALUE pairs, or --file DATA")


def items_from_file(path: str, fmt: str | None) -> dict[str, bytes]:
    """The (key, value) pairs of a data file; ValueError naming file and line."""
    p = Path(path)
    fmt = fmt or {".tsv": "tsv", ".jsonl": "jsonl"}.get(p.suffix, "uuid")
    out: dict[str, bytes] = {}
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip(b"\n")
            if fmt == "jsonl":
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    key = obj["key"]
                    value = obj["value"].encode() if "value" in obj else base64.b64decode(obj["value_base64"], validate=True)
                    if not isinstance(key, str):
                        raise TypeError("key is not a string")
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise ValueError(f"{path}:{n}: not a JSON line with key and value or value_base64 ({e})") from None
            else:
                sep = b" " if fmt == "uuid" else b"\t"
                k, found, value = line.partition(sep)
                if not found:
                    raise ValueError(f"{path}:{n}: no {'space' if fmt == 'uuid' else 'TAB'} between key and value (--format {fmt})")
                try:
                    key = k.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}:{n}: the key is not UTF-8") from None
            if key in out:
                raise ValueError(f"{path}:{n}: key {key[:80]!r} appears twice")
            out[key] = value
    if not out:
        raise ValueError(f"{path}: no lines to write")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        if args.file:
            if args.pairs:
                raise ValueError("give --file or KEY VALUE pairs, not both")
            items = items_from_file(args.file, args.format)
        else:
            items = items_from_args(args.pairs)
    except (OSError, ValueError) as e:
        print(f"kv set: {e}", file=sys.stderr)
        return Exit.USAGE
    return write(lambda c: c.set(*next(iter(items.items()))) if len(items) == 1 else c.set_many(items), args, "set")


def write(action: Callable[[Client], str | int], args: argparse.Namespace, name: str) -> int:
    """Run `action(client)` and map its outcome to an exit status (kv set, kv delete)."""
    from ..client import Client, ServerError, ServerUnreachable, WriteRefusedError

    try:
        with Client(args.url, **client_kwargs(args)) as c:
            result = action(c)
    except InvalidKey as e:
        print(f"kv {name}: {e}", file=sys.stderr)
        return Exit.USAGE
    except WriteRefusedError as e:
        print(f"kv {name}: refused, {e}", file=sys.stderr)
        return Exit.REFUSED
    except ServerUnreachable as e:
        print(f"kv {name}: {e}", file=sys.stderr)
        return Exit.UNREACHABLE
    except ServerError as e:
        print(f"kv {name}: server error {e}", file=sys.stderr)
        return for_status(e.status)
    if isinstance(result, str):
        print(result)
        return Exit.OK
    return result
