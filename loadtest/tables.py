#!/usr/bin/env python3
"""Print the markdown tables of docs/BENCHMARKS.md from docs/bench/*.json, so
every number in them comes from a run's output.

    python loadtest/tables.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "docs" / "bench"


def load(name: str) -> dict:
    p = BENCH / name
    return json.loads(p.read_text()) if p.exists() else {}


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def engine() -> None:
    e, big = load("engine.json"), load("engine-100m.json")
    if not e:
        return
    print(f"### Engine ({e['date']}, `{e['command']}`)\n")
    base = e["python_baseline_rss_kib"]
    rows = []
    for n, b in {**e["build"], **big.get("build", {})}.items():
        rows.append([f"{int(n):,}", f"{b['seconds']:.2f}", f"{b['records_per_s']:,}", f"{b['input_bytes'] / 2**20:,.1f}",
                     f"{b['table_bytes'] / 2**20:,.1f}", b["size_ratio"], f"{b['peak_rss_kib'] / 1024:,.0f}",
                     b["bytes_per_record_over_baseline"], b["open"]["median_ms"], b["lookup"]["hot_us_per_lookup"],
                     b["lookup"]["cold_us_per_lookup"]])
    print(table(["records", "build s", "records/s", "input MiB", "table MiB", "size ratio", "build peak RSS MiB",
                 "bytes/record over baseline", "open ms (median)", "lookup hot us", "lookup cold us"], rows))
    print(f"\nPython baseline RSS {base / 1024:.0f} MiB; the 100M row is from `{big.get('command', 'n/a')}` ({big.get('date', '')}).\n")
    lk = e["lookups"]
    print(table(["contender", "us per lookup", "lookups/s"],
                [[k, v, f"{lk['lookups_per_s'][k]:,}"] for k, v in lk["us_per_lookup"].items()]))
    print(f"\nkv/lmdb rate ratio {lk['kv_vs_lmdb']}, kv/dict {lk['kv_vs_dict']}; build 1M: kv vs LMDB bulk load "
          f"{e['kv_build_vs_lmdb']}x faster (LMDB {e['lmdb_build_seconds']} s); 10M/1M build time {e['build_scaling_10x']}x.\n")


def http() -> None:
    h = load("http.json")
    if not h:
        return
    print(f"### HTTP ({h['date']}, `{h['command']}`, {h['records']:,} records, {h['wrk']})\n")
    t = h.get("throughput")
    if t:
        rows = []
        for name, runs in t["runs"].items():
            best = t["rps"][name]
            p99 = max(runs, key=lambda r: r["rps"])["latency_ms"]["p99"]
            rows.append([name, " / ".join(f"{r['rps']:,}" for r in runs), f"{best:,}", round(best / t["rps"]["ceiling"], 3), p99,
                         sum(r["errors"] for r in runs)])
        print(table(["contender", "req/s per round", "best req/s", "vs ceiling", "p99 ms (best round)", "errors"], rows))
        print(f"\nkv / ceiling {t['kv_vs_ceiling']}, kv / FastAPI route {t['kv_vs_fastapi_route']}x, kv / typical {t['kv_vs_typical']}x.\n")
    lat = h.get("latency")
    if lat:
        rows = [[k, v.get("connections"), f"{v['rps']:,}", v["latency_ms"]["mean"], v["latency_ms"]["p50"], v["latency_ms"]["p99"],
                 v["latency_ms"]["p999"], v["latency_ms"]["max"]] for k, v in lat.items()]
        print(table(["load (kv, 2 workers)", "connections", "req/s", "mean ms", "p50 ms", "p99 ms", "p99.9 ms", "max ms"], rows))
        b = lat["batch"]
        print(f"\nBatches of {b['batch_size']}: {b['keys_per_s']:,} keys/s. Half peak targets {lat['half_peak'].get('target_rps', 0):,} req/s "
              f"(wrk paces each connection with a 2 ms delay; the achieved rate is in the table).\n")
    c = h.get("clients")
    if c:
        rows = []
        for state in ("idle", "loaded"):
            for name, v in c[state].items():
                rows.append([state, name, v["mean"], v["p50"], v["p99"]])
        print(table(["server", "client", "mean ms", "p50 ms", "p99 ms"], rows))
        print("\nConcurrency 1 through wrk, same gunicorn settings: " + ", ".join(
            f"{k} {v['mean']} ms mean" for k, v in c["concurrency_1"].items()) + ".\n")
    m = h.get("memory")
    if m:
        rows = [[w, f"{m['kv'][w]['pss_kib'] / 1024:,.0f}", f"{m['typical'][w]['pss_kib'] / 1024:,.0f}",
                 round(m["typical"][w]["pss_kib"] / m["kv"][w]["pss_kib"], 2)] for w in m["kv"]]
        print(table(["workers", "kv total PSS MiB", "dict solution total PSS MiB", "dict / kv"], rows))
        print()
    ms = h.get("memory_by_size")
    if ms:
        rows = [[f"{int(n):,}", f"{v['table_bytes'] / 2**20:,.0f}", f"{v['per_worker_kib']['Rss'] / 1024:,.0f}",
                 f"{v['per_worker_kib']['Pss'] / 1024:,.0f}", f"{v['per_worker_kib']['Private_Dirty'] / 1024:,.0f}",
                 f"{v['lookups']:,}"] for n, v in ms.items()]
        print(table(["records", "table MiB", "per-worker RSS MiB", "per-worker PSS MiB", "per-worker Private_Dirty MiB",
                     "lookups before reading"], rows))
        print()
    s = h.get("startup")
    if s:
        print(table(["records", "table MiB", "launch to first 200 (best of 3) s", "runs s"],
                    [[f"{int(n):,}", f"{v['table_bytes'] / 2**20:,.0f}", v["first_200_s"], ", ".join(map(str, v["runs"]))]
                     for n, v in s.items()]))
        print()


if __name__ == "__main__":
    engine()
    http()
