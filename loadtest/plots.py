#!/usr/bin/env python3
"""Draw the benchmark plots from docs/bench/*.json into docs/img/*.png.

    python loadtest/plots.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "docs" / "bench"
IMG = ROOT / "docs" / "img"

LABELS = {
    "ceiling": "bare ASGI,\nconstant body\n(ceiling)",
    "bare_lookup": "bare ASGI,\nmmap lookup",
    "kv": "kv\n(fast path)",
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
    names = [n for n in LABELS if n in t["rps"]]
    rps = [t["rps"][n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = ["#999999" if n != "kv" else "#1f77b4" for n in names]
    bars = ax.bar([LABELS[n] for n in names], rps, color=colors)
    ceiling = t["rps"].get("ceiling")
    for b, v in zip(bars, rps):
        label = f"{v:,}" + (f"\n{v / ceiling:.2f}x" if ceiling else "")
        ax.annotate(label, (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("requests per second")
    ax.set_title(f"GET /v1/keys/{{key}}, {http['records']:,} records, 2 workers (typical: 1 process)\n{http['wrk']}", fontsize=9)
    ax.set_ylim(0, max(rps) * 1.25)
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
        ax.bar(xs, vals, width, label=f"{label}: {lat[key]['rps']:,} req/s")
        for x, v in zip(xs, vals):
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
    a1.loglog(ns, [n / 1e6 for n in ns], linestyle="--", color="gray", label="1M records/s")
    a1.set_xlabel("records")
    a1.set_ylabel("seconds")
    a1.set_title("Build time", fontsize=9)
    a1.legend(fontsize=8)
    a2.loglog(ns, [v["input_bytes"] / 2**20 for _, v in pts], marker="o", label="input data file")
    a2.loglog(ns, [v["table_bytes"] / 2**20 for _, v in pts], marker="o", label="table file")
    a2.set_xlabel("records")
    a2.set_ylabel("MiB")
    a2.set_title("Size", fontsize=9)
    a2.legend(fontsize=8)
    return _save(fig, "build.png")


def main() -> int:
    made = []
    http_path, engine_path = BENCH / "http.json", BENCH / "engine.json"
    if http_path.exists():
        http = json.loads(http_path.read_text())
        made += [throughput(http), latency(http), memory(http)]
    if engine_path.exists():
        made.append(build(json.loads(engine_path.read_text())))
    for p in filter(None, made):
        print(f"wrote {p.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
