"""kv inspect TABLE"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..errors import TableCorrupt
from .exits import Exit

if TYPE_CHECKING:
    from ..table import Table

EXITS = {Exit.OK: "printed", Exit.FAILED: "the table is missing, unreadable or corrupt", Exit.USAGE: "bad usage"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", metavar="TABLE", help="table file")
    p.add_argument("--json", action="store_true", help="print JSON")


def describe(t: Table) -> dict[str, Any]:
    s = t.stats()
    h = t.header
    return {
        "path": str(t.path),
        "generation": t.generation,
        "format_version": h.version,
        "key_kind": t.key_kind,
        "records": s.records,
        "value_bytes": s.value_bytes,
        "file_bytes": s.file_bytes,
        "slots": s.slots,
        "home_slots": h.home_slots,
        "load_factor": round(s.load_factor, 4),
        "mean_probe": round(s.mean_probe, 3),
        "max_probe": s.max_probe,
        "content_checksum": f"{h.content_checksum:016x}",
        "shard": {"index": h.shard_index, "count": h.shard_count},
        "lookup": "C (kv._speedups)" if t.implementation == "c" else "Python (kv._speedups not built or KV_PURE_PYTHON set)",
        "meta": t.meta,
    }


def run(args: argparse.Namespace) -> int:
    from ..table import open_table

    try:
        with open_table(args.table) as t:
            d = describe(t)
    except (TableCorrupt, OSError) as e:
        print(f"kv inspect: {e}", file=sys.stderr)
        return Exit.FAILED
    if args.json:
        print(json.dumps(d, indent=2))
        return Exit.OK
    width = max(len(k) for k in d)
    for k, v in d.items():
        if k == "meta":
            src = v.get("source", {})
            print(f"{'source':<{width}}  {src.get('name')} ({src.get('size', 0):,} bytes)")
            print(f"{'built_at':<{width}}  {v.get('built_at')}")
            print(f"{'options':<{width}}  {json.dumps(v.get('options'))}")
            continue
        if k == "shard":
            v = f"{v['index']} of {v['count']}" if v["count"] > 1 else "not sharded"
        elif isinstance(v, int):
            v = f"{v:,}"
        print(f"{k:<{width}}  {v}")
    return Exit.OK
