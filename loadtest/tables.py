#!/usr/bin/env python3
"""Print the markdown tables of docs/BENCHMARKS.md from docs/bench/*.json, so
every number in them comes from a run's output.

    python loadtest/tables.py > /tmp/tables.md
    python loadtest/tables.py --engine /tmp/e.json --engine-big none --http /tmp/h.json --writes none   # other runs' output
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "docs" / "bench"


def load(path: str) -> dict:
    """A results file; {} when missing or 'none'."""
    p = Path(path)
    return json.loads(p.read_text()) if path != "none" and p.exists() else {}


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def engine(e: dict, big: dict) -> None:
    if not e:
        return
    print(f"### Engine ({e['date']}, `{e['command']}`)\n")
    base = e["python_baseline_rss_kib"]
    rows = []
    builds = {**e["build"], **big.get("build", {})}
    for n, b in builds.items():
        gen = b.get("gen_seconds")
        rows.append(
            [
                f"{int(n):,}",
                "n/a" if gen is None else f"{gen:.2f}",
                f"{b['seconds']:.2f}",
                f"{b['records_per_s']:,}",
                f"{b['input_bytes'] / 2**20:,.1f}",
                f"{b['table_bytes'] / 2**20:,.1f}",
                b["size_ratio"],
                f"{b['peak_rss_kib'] / 1024:,.0f}",
                b["bytes_per_record_over_baseline"],
                b["open"]["median_ms"],
                b["lookup"]["hot_us_per_lookup"],
                b["lookup"]["cold_us_per_lookup"],
            ]
        )
    print(
        table(
            [
                "records",
                "kv gen s",
                "build s",
                "records/s",
                "input MiB",
                "table MiB",
                "size ratio",
                "build peak RSS MiB",
                "bytes/record over baseline",
                "open ms (median)",
                "lookup hot us",
                "lookup cold us",
            ],
            rows,
        )
    )
    print(f"\nPython baseline RSS {base / 1024:.0f} MiB" + (f"; the 100M row is from `{big['command']}` ({big['date']})." if big else "."))
    gen10m = builds.get("10000000", {}).get("gen_seconds")
    if gen10m is not None:
        print(f"`kv gen 10000000` took {gen10m:.2f} s (goal: under 60 s; wall time of the command, interpreter start included).")
    print()
    lk = e.get("lookups")
    if not lk:  # a --no-compare run
        return
    print(
        table(["contender", "us per lookup", "lookups/s"], [[k, v, f"{lk['lookups_per_s'][k]:,}"] for k, v in lk["us_per_lookup"].items()])
    )
    sk = e.get("string_keys")
    if sk:
        lk2 = sk["lookups"]
        print(
            table(
                [
                    "string keys (kv gen --keys string)",
                    "records",
                    "build s (median of 3)",
                    "size ratio",
                    "kv us per lookup",
                    "dict us per lookup",
                    "kv / dict rate",
                    "UUID kv us per lookup (same run)",
                ],
                [
                    [
                        "8-40 characters, 10% misses",
                        f"{sk['records']:,}",
                        sk["build_seconds"],
                        sk["size_ratio"],
                        lk2["us_per_lookup"]["kv"],
                        lk2["us_per_lookup"]["dict"],
                        lk2["kv_vs_dict"],
                        lk2["uuid_kv_us_per_lookup"],
                    ]
                ],
            )
            + "\n"
        )
    scaling = f"; 10M/1M build time {e['build_scaling_10x']}x" if "build_scaling_10x" in e else ""
    print(
        f"\nkv/lmdb rate ratio {lk['kv_vs_lmdb']}, kv/dict {lk['kv_vs_dict']}; build 1M: kv vs LMDB bulk load "
        f"{e['kv_build_vs_lmdb']}x faster (LMDB {e['lmdb_build_seconds']} s){scaling}.\n"
    )


def _paired(runs: dict, a: str, b: str) -> list[float]:
    """a / b round by round (the runs of one round sit at the same index)."""
    return [ra["rps"] / rb["rps"] for ra, rb in zip(runs[a], runs[b], strict=False)]


def _ratio_line(t: dict, key: str, a: str, b: str, label: str, digits: int, unit: str = "") -> str:
    """'label M (rounds r1, r2, ...; best / best B)': M the median of the paired
    per-round ratios (computed from the runs for results that predate it)."""
    paired = _paired(t["runs"], a, b)
    if f"{key}_best" in t:
        median, best = t[key], t[f"{key}_best"]
    else:  # older results: t[key] was best / best
        median, best = round(statistics.median(paired), digits), round(t["rps"][a] / t["rps"][b], digits)
    return (
        f"{label} **{median}{unit}** (median of the paired rounds: {', '.join(f'{r:.{digits}f}' for r in paired)}; "
        f"best / best {best}{unit})"
    )


def http(h: dict) -> None:
    if not h:
        return
    print(f"### HTTP ({h['date']}, `{h['command']}`, {h['records']:,} records, {h['wrk']})\n")
    t = h.get("throughput")
    if t:
        runs = t["runs"]
        rows = []
        for name, rs in runs.items():
            best = t["rps"][name]
            median = t.get("rps_median", {}).get(name) or round(statistics.median(r["rps"] for r in rs))
            p99 = max(rs, key=lambda r: r["rps"])["latency_ms"]["p99"]
            vs = " / ".join(f"{r:.3f}" for r in _paired(runs, name, "ceiling"))
            rows.append([name, " / ".join(f"{r['rps']:,}" for r in rs), f"{median:,}", f"{best:,}", vs, p99, sum(r["errors"] for r in rs)])
        print(
            table(
                ["contender", "req/s per round", "median req/s", "best req/s", "vs ceiling per round", "p99 ms (best round)", "errors"],
                rows,
            )
        )
        order = t.get("order")
        print(
            f"\n{len(runs['kv'])} rounds" + (f" ({order})" if order else "") + "; a ratio is taken within each round, "
            "the headline is the median of those.\n"
        )
        lines = [_ratio_line(t, "kv_vs_ceiling", "kv", "ceiling", "kv / ceiling", 3)]
        if "ceiling_kvworker" in runs:
            lines += [
                _ratio_line(t, "kv_vs_ceiling_kvworker", "kv", "ceiling_kvworker", "kv / ceiling under kv's worker", 3),
                _ratio_line(
                    t, "ceiling_kvworker_vs_ceiling", "ceiling_kvworker", "ceiling", "ceiling under kv's worker / stock ceiling", 3
                ),
            ]
        lines += [
            _ratio_line(t, "kv_vs_fastapi_route", "kv", "fastapi_route", "kv / FastAPI route", 2, "x"),
            _ratio_line(t, "kv_vs_typical", "kv", "typical", "kv / typical", 2, "x"),
        ]
        extra = [
            ("raw_protocol", "kv_vs_raw_protocol", "kv", "kv / a raw uvloop + httptools protocol doing the same lookup"),
            ("raw_protocol", "raw_protocol_vs_ceiling", "raw_protocol", "raw protocol / ceiling"),
            ("kv_string", "kv_string_vs_kv", "kv_string", "string-key hits (1M string table, percent-encoded keys) / UUID hits"),
            ("kv_token", "kv_token_vs_kv", "kv_token", "hits with a read token / without"),
        ]
        for needs, key, a, label in extra:
            if needs in runs and key in t:
                b = "ceiling" if key.endswith("_vs_ceiling") else ("raw_protocol" if key == "kv_vs_raw_protocol" else "kv")
                lines.append(_ratio_line(t, key, a, b, label, 3))
        shares = [r.get("protocol_share") for r in runs.get("kv", []) if r.get("protocol_share") is not None]
        if shares:
            lines.append(
                "share of kv's requests answered in the protocol (kv_protocol_hits_total): " + ", ".join(f"{s:.3f}" for s in shares)
            )
        print("\n".join(f"- {line}" for line in lines) + "\n")
    lat = h.get("latency")
    if lat:
        rows = [
            [
                k,
                v.get("connections"),
                f"{v['rps']:,}",
                v["latency_ms"]["mean"],
                v["latency_ms"]["p50"],
                v["latency_ms"]["p99"],
                v["latency_ms"]["p999"],
                v["latency_ms"]["max"],
            ]
            for k, v in lat.items()
        ]
        print(table(["load (kv, 2 workers)", "connections", "req/s", "mean ms", "p50 ms", "p99 ms", "p99.9 ms", "max ms"], rows))
        b = lat["batch"]
        print(f"\nBatches of {b['batch_size']}: {b['keys_per_s']:,} keys/s.")
        hp = lat["half_peak"]
        if "calibration" in hp:
            cal = ", ".join(f"{c['delay_ms']} ms -> {c['rps']:,}" for c in hp["calibration"])
            print(
                f"Half peak: target {hp['target_rps']:,} req/s (50% of {hp['peak_rps']:,}, {hp['peak_source']}), achieved "
                f"{hp['rps']:,} req/s = **{hp['achieved_vs_target']}** of the target; {hp['connections']} connections, each waiting "
                f"{hp['delay_ms']} ms before each request, the delay calibrated by 3 s runs until one came within 5% of the "
                f"target ({cal} req/s).\n"
            )
        elif "target_rps" in hp:
            print(
                f"Half peak targets {hp['target_rps']:,} req/s and achieved {hp['rps']:,} "
                f"({hp['rps'] / hp['target_rps']:.2f} of the target; fixed 2 ms delay per connection, uncalibrated).\n"
            )
    c = h.get("clients")
    if c:
        rows = []
        for state in ("idle", "loaded"):
            for name, v in c[state].items():
                rows.append([state, name, v["mean"], v["p50"], v["p99"]])
        print(table(["server", "client", "mean ms", "p50 ms", "p99 ms"], rows))
        print(
            "\nConcurrency 1 through wrk, same gunicorn settings: "
            + ", ".join(f"{k} {v['mean']} ms mean" for k, v in c["concurrency_1"].items())
            + ".\n"
        )
    m = h.get("memory")
    if m:
        rows = [
            [
                w,
                f"{m['kv'][w]['pss_kib'] / 1024:,.0f}",
                f"{m['typical'][w]['pss_kib'] / 1024:,.0f}",
                round(m["typical"][w]["pss_kib"] / m["kv"][w]["pss_kib"], 2),
            ]
            for w in m["kv"]
        ]
        print(table(["workers", "kv total PSS MiB", "dict solution total PSS MiB", "dict / kv"], rows))
        print()
    ms = h.get("memory_by_size")
    if ms:
        rows = [
            [
                f"{int(n):,}",
                f"{v['table_bytes'] / 2**20:,.0f}",
                f"{v['per_worker_kib']['Rss'] / 1024:,.0f}",
                f"{v['per_worker_kib']['Pss'] / 1024:,.0f}",
                f"{v['per_worker_kib']['Private_Dirty'] / 1024:,.0f}",
                f"{v['lookups']:,}",
            ]
            for n, v in ms.items()
        ]
        print(
            table(
                [
                    "records",
                    "table MiB",
                    "per-worker RSS MiB",
                    "per-worker PSS MiB",
                    "per-worker Private_Dirty MiB",
                    "lookups before reading",
                ],
                rows,
            )
        )
        print()
    s = h.get("startup")
    if s:
        print(
            table(
                ["records", "table MiB", "launch to first 200 (best of 3) s", "runs s"],
                [
                    [f"{int(n):,}", f"{v['table_bytes'] / 2**20:,.0f}", v["first_200_s"], ", ".join(map(str, v["runs"]))]
                    for n, v in s.items()
                ],
            )
        )
        print()


def writes(w: dict) -> None:
    """docs/BENCHMARKS.md's writes section: loadtest/bench_writes.py's rounds, memory and compaction."""
    if not w:
        return
    load = w["load_average"]
    print(
        f"### Writes ({w['date']}, `{w['command']}`; {w['scale']}; load average {load['start'][0]} at the start, "
        f"{load['end'][0]} at the end)\n"
    )
    runs, s = w["rounds"], w["summary"]
    rows = []
    for name in ("ro", "rw_empty", "rw_pending", "rw_writer"):
        rs = runs[name]
        vs = " / ".join(f"{r['rps'] / ro['rps']:.3f}" for r, ro in zip(rs, runs["ro"], strict=False))
        p99 = statistics.median(r["latency_ms"]["p99"] for r in rs)
        rows.append([name, " / ".join(f"{r['rps']:,}" for r in rs), f"{s['rps_median'][name]:,}", vs, p99, sum(r["errors"] for r in rs)])
    print(table(["reads (wrk, 64 connections)", "req/s per round", "median req/s", "vs ro per round", "p99 ms (median)", "errors"], rows))
    writer = [r["writer"] for r in runs["rw_writer"]]
    print(
        "\nThe paced writer of rw_writer achieved "
        + ", ".join(f"{x['achieved_per_s']:g}" for x in writer)
        + f" writes/s (target {writer[0]['target_per_s']:g}), its PUTs taking p50 "
        + ", ".join(f"{x['latency_ms'].get('p50')}" for x in writer)
        + " ms.\n"
    )
    rows = []
    for name, unit in (("put", "writes/s"), ("batch", "keys/s")):
        rs = runs[name]
        rate = [r["keys_per_s"] if name == "batch" else r["rps"] for r in rs]
        rows.append(
            [
                name,
                unit,
                " / ".join(f"{x:,}" for x in rate),
                f"{statistics.median(rate):,.0f}",
                " / ".join(str(r["latency_ms"]["p50"]) for r in rs),
                " / ".join(str(r["latency_ms"]["p99"]) for r in rs),
                sum(r["errors"] for r in rs),
            ]
        )
    print(table(["writes (wrk, 1 connection)", "unit", "per round", "median", "p50 ms per round", "p99 ms per round", "errors"], rows))
    m = s["memory"]
    print(
        f"\nPer-worker Private_Dirty (the largest worker, median of the rounds): read-only {m['ro_private_dirty_mib_median']} MiB, "
        f"writable at the threshold ({w['parameters']['changes']:,} changes) {m['pending_private_dirty_mib_median']} MiB: "
        f"{m['private_dirty_over_ro_mib_median']} MiB more (rounds {', '.join(map(str, m['private_dirty_over_ro_mib']))}; "
        f"USS {m['uss_over_ro_mib_median']} MiB more).\n"
    )
    c = w.get("compaction")
    if c:
        rows = [
            [
                r["round"],
                r["seconds"],
                f"{r['without']['rps']:,}",
                r["without"]["latency_ms"]["p99"],
                f"{r['during']['rps']:,}",
                r["during"]["latency_ms"]["p99"],
                r["p99_ratio"],
                r["covered"],
            ]
            for r in c["runs"]
        ]
        print(
            table(
                [
                    "compaction",
                    "seconds",
                    "req/s without",
                    "p99 ms without",
                    "req/s during",
                    "p99 ms during",
                    "p99 during / without",
                    "covered",
                ],
                rows,
            )
        )
        print(
            f"\nCompaction of {w['parameters']['records']:,} records with {c['changes']:,} changes: {c['alone_s']} s with no other load, "
            f"{c['seconds_median']} s (median) under the read load ({c['load']['what']}; read runs of {c['window_s']} s, "
            "`covered` the share of the run the compaction lasted).\n"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default=str(BENCH / "engine.json"), help="bench_engine.py output ('none' to leave out)")
    ap.add_argument("--engine-big", default=str(BENCH / "engine-100m.json"), help="the 100M run's output, rows added to the engine table")
    ap.add_argument("--http", default=str(BENCH / "http.json"), help="bench_http.py output ('none' to leave out)")
    ap.add_argument("--writes", default=str(BENCH / "writes.json"), help="bench_writes.py output ('none' to leave out)")
    args = ap.parse_args()
    engine(load(args.engine), load(args.engine_big))
    http(load(args.http))
    writes(load(args.writes))


if __name__ == "__main__":
    main()
