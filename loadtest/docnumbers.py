#!/usr/bin/env python3
"""Keep every measured number cited in the prose docs equal to the benchmark
results it comes from (docs/bench/*.json).

A cited number is written with its source beside it, invisible when rendered:

    each worker owns <!--n http memory_by_size.1000000.per_worker_kib.Private_Dirty kib:.0f-->33<!--/n--> MiB

`http` names docs/bench/http.json (`engine`, `engine-100m`, `http-keys`, `writes` the others), the
dotted path a value in it, and the last field how to print it: a Python format
spec, optionally after a unit conversion (`kib:` KiB to MiB, `b:` bytes to
MiB, `gb:` bytes to GiB, `s2ms:` seconds to ms). Whole tables are blocks:

    <!--table capacity-->
    ...
    <!--/table-->

    python loadtest/docnumbers.py           # rewrite README.md and docs/*.md from the JSON
    python loadtest/docnumbers.py --check   # exit 1 naming each cited number that disagrees

`make bench` rewrites them after each run; tests/unit/test_docnumbers.py
fails when a doc and the JSON disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "docs" / "bench"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = {
    "http": "http.json",
    "engine": "engine.json",
    "engine-100m": "engine-100m.json",
    "http-keys": "http-keys.json",
    "writes": "writes.json",
    "container": "container.json",
    "http-token": "http-token.json",
    "http-raw": "http-raw.json",
}

NUMBER = re.compile(r"<!--n (?P<src>[\w-]+) (?P<path>[^ ]+) (?P<fmt>[^ ]*?)-->(?P<value>.*?)<!--/n-->")
TABLE = re.compile(r"(?P<open><!--table (?P<name>[\w-]+)-->\n)(?P<body>.*?)(?P<close><!--/table-->)", re.S)
CONVERT = {"kib": 1 / 1024, "b": 1 / 2**20, "gb": 1 / 2**30, "s2ms": 1000.0, "pct": 100.0}


def load_sources(bench: Path = BENCH) -> dict:
    out = {}
    for name, file in SOURCES.items():
        p = bench / file
        out[name] = json.loads(p.read_text()) if p.exists() else {}
    return out


def lookup(sources: dict, src: str, path: str):
    node = sources[src]
    for part in path.split("."):
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node[part]
    return node


def render_number(sources: dict, src: str, path: str, fmt: str) -> str:
    value = lookup(sources, src, path)
    conv, _, spec = fmt.rpartition(":") if ":" in fmt and fmt.split(":")[0] in CONVERT else ("", "", fmt)
    if conv:
        value = value * CONVERT[conv]
    return format(value, spec)


# -- tables ----------------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def _size(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.1f} MiB"


def _us(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def capacity(s: dict) -> str:
    """Records, input, table, build, memory, lookups: docs/DESIGN.md's capacity table."""
    e, big, h = s["engine"], s["engine-100m"], s["http"]
    builds = {**e.get("build", {}), **big.get("build", {})}
    mem = h.get("memory_by_size", {})
    rows = [
        "| records | input | table (x input) | build | build peak RSS | open | per-worker memory (RSS / PSS / private) | lookup hot | lookup cold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, b in builds.items():
        if n not in mem:
            continue
        w = mem[n]["per_worker_kib"]
        peak = b["peak_rss_kib"] * 1024
        rows.append(
            f"| {int(n):,} | {_size(b['input_bytes'])} | {_size(b['table_bytes'])} ({b['size_ratio']}x) | {b['seconds']:.2f} s "
            f"| {_size(peak)} | {b['open']['median_ms']} ms | {_mib(w['Rss'])} / {_mib(w['Pss'])} / {_mib(w['Private_Dirty'])} MiB "
            f"| {b['lookup']['hot_us_per_lookup']:.2f} us | {_us(b['lookup']['cold_us_per_lookup'])} us |"
        )
    return "\n".join(rows) + "\n"


def clients(s: dict) -> str:
    """Client-side latency, idle and loaded: docs/DESIGN.md's latency table."""
    c = s["http"].get("clients", {})
    names = {
        "curl": "curl (new process and connection each time, `time_total`)",
        "python_client": "Python client `kv.Client.get` (keep-alive)",
        "wrk": "wrk, 1 connection",
    }
    loaded = {"curl": "curl", "python_client": "Python client", "wrk": "wrk, 64 connections (the load itself)"}
    rows = ["| server | client | mean | p50 | p99 |", "|---|---|---|---|---|"]
    for state, label in (("idle", names), ("loaded", loaded)):
        for name, v in c.get(state, {}).items():
            rows.append(f"| {state} | {label.get(name, name)} | {v['mean']} ms | {v['p50']} ms | {v['p99']} ms |")
    return "\n".join(rows) + "\n"


def _printed(fn, *args) -> str:
    """What a loadtest/tables.py function prints, as text."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location("tables", ROOT / "loadtest" / "tables.py")
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        getattr(tables, fn)(*args)
    return out.getvalue()


def engine_tables(s: dict) -> str:
    """docs/BENCHMARKS.md's engine section: loadtest/tables.py's engine tables."""
    return _printed("engine", s["engine"], s["engine-100m"])


def http_tables(s: dict) -> str:
    """docs/BENCHMARKS.md's HTTP section: loadtest/tables.py's HTTP tables."""
    return _printed("http", s["http"])


def writes_tables(s: dict) -> str:
    """docs/BENCHMARKS.md's writes section: loadtest/tables.py's writes tables."""
    return _printed("writes", s["writes"])


TABLES = {"capacity": capacity, "clients": clients, "engine": engine_tables, "http": http_tables, "writes": writes_tables}


# -- rewrite and check ---------------------------------------------------------------------------


def rewrite(text: str, sources: dict) -> str:
    text = NUMBER.sub(
        lambda m: f"<!--n {m['src']} {m['path']} {m['fmt']}-->{render_number(sources, m['src'], m['path'], m['fmt'])}<!--/n-->", text
    )
    return TABLE.sub(lambda m: m["open"] + TABLES[m["name"]](sources) + m["close"], text)


def problems(path: Path, sources: dict) -> list[str]:
    """Each cited number or table in `path` that disagrees with the JSON, or cannot be found there."""
    out = []
    text = path.read_text()
    for m in NUMBER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        try:
            want = render_number(sources, m["src"], m["path"], m["fmt"])
        except (KeyError, IndexError, ValueError, TypeError) as e:
            out.append(f"{path.name}:{line}: {m['src']} {m['path']}: not in the results ({type(e).__name__}: {e})")
            continue
        if m["value"] != want:
            out.append(f"{path.name}:{line}: says {m['value']!r}, {SOURCES[m['src']]} {m['path']} gives {want!r}")
    for m in TABLE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m["name"] not in TABLES:
            out.append(f"{path.name}:{line}: unknown table {m['name']!r}")
        elif m["body"] != TABLES[m["name"]](sources):
            out.append(f"{path.name}:{line}: table {m['name']} differs from the results; run python loadtest/docnumbers.py")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if any cited number disagrees")
    args = ap.parse_args(argv)
    sources = load_sources()
    if args.check:
        found = [p for doc in DOCS for p in problems(doc, sources)]
        for p in found:
            print(p, file=sys.stderr)
        return 1 if found else 0
    for doc in DOCS:
        text = doc.read_text()
        new = rewrite(text, sources)
        if new != text:
            doc.write_text(new)
            print(f"rewrote {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
