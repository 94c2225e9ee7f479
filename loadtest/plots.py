#!/usr/bin/env python3
# The formatter would dedent the example lines, which --help shows as they are.
# fmt: off
"""Draw the benchmark plots from docs/bench/*.json into docs/img/*.png.

    python loadtest/plots.py
    python loadtest/plots.py --http /tmp/h.json --engine /tmp/e.json --img /tmp/img   # other runs' output
"""
# fmt: on

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "docs" / "bench"
IMG = ROOT / "docs" / "img"

LABELS = {
    "ceiling": "bare ASGI,\nconstant body\n(ceiling)",
    "ceiling_kvworker": "constant body,\nkv's worker\n(ceiling)",
    "kv": "kv\n(fast path)",
    "bare_lookup": "bare ASGI,\nmmap lookup",
    "fastapi_route": "same lookup,\nFastAPI route",
    "typical": "FastAPI + dict,\n1 uvicorn\n(typical)",
}


def _save(fig, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(http: dict) -> Path | None:
    t = http.get("throughput")
    if not t:
        return None
    names = [n for n in LABELS if n in t["runs"]]
    rounds = {n: [r["rps"] for r in t["runs"][n]] for n in names}
    rps = [round(statistics.median(rounds[n])) for n in names]  # bars: median round; dots: every round
    fig, ax = plt.subplots(figsize=(9, 4.4))
    colors = ["#1f77b4" if n == "kv" else "#c7c7c7" if n.startswith("ceiling") else "#999999" for n in names]
    labels = [LABELS[n] for n in names]
    bars = ax.bar(labels, rps, color=colors)
    for label, n in zip(labels, names, strict=True):
        ax.scatter([label] * len(rounds[n]), rounds[n], color="black", s=8, zorder=3)
    ceiling = rps[names.index("ceiling")] if "ceiling" in names else None
    for b, v, n in zip(bars, rps, names, strict=True):
        label = f"{v:,}" + (f"\n{v / ceiling:.2f}x" if ceiling else "")
        ax.annotate(label, (b.get_x() + b.get_width() / 2, max(v, *rounds[n])), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("requests per second")
    n_rounds = len(rounds[names[0]])
    headline = f"kv / ceiling {t['kv_vs_ceiling']}"
    if "kv_vs_ceiling_kvworker" in t:
        headline += f", kv / ceiling under kv's worker {t['kv_vs_ceiling_kvworker']} (medians of per-round ratios)"
    ax.set_title(
        f"GET /v1/keys/{{key}}, {http['records']:,} records, 2 workers (typical: 1 process), {http['wrk']}\n"
        f"bars: median of {n_rounds} rounds, dots: each round; {headline}",
        fontsize=8,
    )
    ax.set_ylim(0, max(max(r) for r in rounds.values()) * 1.25)
    return _save(fig, "throughput.png")


def latency(http: dict) -> Path | None:
    lat = http.get("latency")
    if not lat:
        return None
    cases = [("concurrency_1", "concurrency 1"), ("half_peak", "50% of peak"), ("peak", "peak (64 conns)")]
    qs = ["p50", "p90", "p99", "p999"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.25
    for i, (key, label) in enumerate(cases):
        if key not in lat:
            continue
        vals = [lat[key]["latency_ms"][q] for q in qs]
        xs = [j + (i - 1) * width for j in range(len(qs))]
        target = lat[key].get("target_rps")
        ax.bar(xs, vals, width, label=f"{label}: {lat[key]['rps']:,} req/s" + (f" (target {target:,})" if target else ""))
        for x, v in zip(xs, vals, strict=True):
            ax.annotate(f"{v:.2f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(qs)), qs)
    ax.set_ylabel("milliseconds (wrk, client side)")
    ax.set_yscale("log")
    ax.set_title("kv latency percentiles, GET random existing keys, 2 workers", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, "latency.png")


def memory(http: dict) -> Path | None:
    mem = http.get("memory")
    if not mem:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("kv", "kv (mmap table)"), ("typical", "FastAPI + dict")):
        pts = sorted((int(w), v["pss_kib"] / 1024) for w, v in mem[name].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        for w, m in pts:
            ax.annotate(f"{m:.0f}", (w, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("workers")
    ax.set_xticks([1, 2, 4])
    ax.set_ylabel("total PSS, MiB (master + workers)")
    ax.set_title(f"Memory after 200k random lookups, {http['records']:,} records", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_ylim(0, None)
    return _save(fig, "memory.png")


def build(engine: dict) -> Path | None:
    b = engine.get("build")
    if not b:
        return None
    pts = sorted((int(n), v) for n, v in b.items())
    ns = [n for n, _ in pts]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.loglog(ns, [v["seconds"] for _, v in pts], marker="o", label="kv build")
    gen = [(n, v["gen_seconds"]) for n, v in pts if v.get("gen_seconds")]
    if gen:
        a1.loglog([n for n, _ in gen], [g for _, g in gen], marker="s", label="kv gen (data file)")
    a1.loglog(ns, [n / 1e6 for n in ns], linestyle="--", color="gray", label="1M records/s")
    a1.set_xlabel("records")
    a1.set_ylabel("seconds")
    a1.set_title("Build and generation time", fontsize=9)
    a1.legend(fontsize=8)
    a2.loglog(ns, [v["input_bytes"] / 2**20 for _, v in pts], marker="o", label="input data file")
    a2.loglog(ns, [v["table_bytes"] / 2**20 for _, v in pts], marker="o", label="table file")
    a2.set_xlabel("records")
    a2.set_ylabel("MiB")
    a2.set_title("Size", fontsize=9)
    a2.legend(fontsize=8)
    return _save(fig, "build.png")


def main() -> int:
    global IMG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", default=str(BENCH / "http.json"))
    ap.add_argument("--engine", default=str(BENCH / "engine.json"))
    ap.add_argument("--img", default=str(IMG), help="directory for the PNG files")
    args = ap.parse_args()
    IMG = Path(args.img).resolve()
    made = []
    http_path, engine_path = Path(args.http), Path(args.engine)
    if http_path.exists():
        http = json.loads(http_path.read_text())
        made += [throughput(http), latency(http), memory(http)]
    if engine_path.exists():
        made.append(build(json.loads(engine_path.read_text())))
    for p in filter(None, made):
        print(f"wrote {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
