#!/usr/bin/env python3
"""Engine benchmark: lookups, build, size and open time, side by side in one run.

    python loadtest/bench_engine.py [--records 1000000] [--sizes 10000,100000,1000000,10000000] [--out docs/bench/engine.json]

Contenders for lookups (same 200k keys: 90% present, 10% absent; key parsing
included on every side):
  kv      Table.get(key_str)                      (mmap table, this project)
  lmdb    txn.get(bytes.fromhex(key.replace('-', '')))  one read transaction
  dict    d.get(key_str)                          a Python dict of the whole file

Build contenders on the same file: `kv build` (subprocess, peak RSS measured by
/usr/bin/time -v when installed) and LMDB: parse, sort, putmulti(append=True).

`kv gen N` is timed at every size up to 10M (and at any size it has to
generate): when the data file already exists, a generation into a temporary
file beside it, deleted afterwards.
Absolute numbers drift on a shared 2-core machine; the ratios in one run hold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run_build(data: Path, out: Path) -> dict:
    """Build in a subprocess; return seconds and peak RSS (KiB)."""
    code = f"from kv.build import build_table; r = build_table({str(data)!r}, {str(out)!r}, progress=False); print(r.seconds)"
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    cmd = (["/usr/bin/time", "-v"] if timer else []) + [PY, "-c", code]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak = None
    if timer:
        for line in p.stderr.splitlines():
            if "Maximum resident set size" in line:
                peak = int(line.split(":")[1])
    else:  # same number, from the kernel's accounting of waited-for children
        import resource

        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": float(p.stdout.strip().splitlines()[-1]),
        "wall_seconds": wall,
        "peak_rss_kib": peak,
        "peak_rss_tool": "/usr/bin/time -v" if timer else "getrusage(RUSAGE_CHILDREN)",
    }


def python_baseline_rss() -> int:
    """Peak RSS of a Python that imports what the builder imports, doing nothing."""
    import resource

    code = "import numpy, xxhash, kv.build"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([PY, "-c", code], check=True, cwd=ROOT)
    return max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def lmdb_load(data: Path, path: Path) -> float:
    import lmdb

    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    items = []
    with open(data, "rb") as f:
        for line in f:
            k, v = line.rstrip(b"\n").split(b" ", 1)
            items.append((bytes.fromhex(k.decode().replace("-", "")), v))
    items.sort()
    env = lmdb.open(str(path), map_size=1 << 36, sync=False, writemap=True, metasync=False)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(items, append=True)
    env.sync(True)
    env.close()
    return time.perf_counter() - t0


def lookup_keys(data: Path, n: int, misses: float, seed: int) -> tuple[list[str], int]:
    rnd = random.Random(seed)
    keys = []
    with open(data, "rb") as f:
        for line in f:
            keys.append(line[:36].decode())
    hits = rnd.sample(keys, min(len(keys), int(n * (1 - misses))))
    absent = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n - len(hits))]
    sample = hits + absent
    rnd.shuffle(sample)
    return sample, len(hits)


def bench_lookups(data: Path, table: Path, lmdb_path: Path, n_keys: int, rounds: int) -> dict:
    import lmdb

    import kv

    keys, n_hits = lookup_keys(data, n_keys, 0.10, seed=1)
    t = kv.open_table(table)
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    txn = env.begin()
    d = {}
    with open(data, "rb") as f:
        for line in f:
            k, v = line.rstrip(b"\n").split(b" ", 1)
            d[k.decode()] = v

    kv_get, lm_get, d_get, fromhex = t.get, txn.get, d.get, bytes.fromhex

    def run_kv():
        return sum(1 for k in keys if kv_get(k) is not None)

    def run_lmdb():
        return sum(1 for k in keys if lm_get(fromhex(k.replace("-", ""))) is not None)

    def run_dict():
        return sum(1 for k in keys if d_get(k) is not None)

    contenders = {"kv": run_kv, "lmdb": run_lmdb, "dict": run_dict}
    for name, fn in contenders.items():  # warm up and check agreement
        found = fn()
        assert found == n_hits, f"{name} found {found} of {n_hits}"
    times = {name: [] for name in contenders}
    for _ in range(rounds):  # interleaved, so drift hits every contender alike
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    us = {name: statistics.median(ts) / len(keys) * 1e6 for name, ts in times.items()}
    t.close()
    env.close()
    return {
        "keys": len(keys),
        "hits": n_hits,
        "rounds": rounds,
        "us_per_lookup": {k: round(v, 3) for k, v in us.items()},
        "lookups_per_s": {k: round(1e6 / v) for k, v in us.items()},
        "kv_vs_lmdb": round(us["lmdb"] / us["kv"], 2),
        "kv_vs_dict": round(us["dict"] / us["kv"], 2),
    }


def bench_string_keys(work: Path, n: int, n_keys: int, rounds: int, uuid_lookups: dict) -> dict:
    """String keys (kv gen --keys string: 8-40 characters, the same values):
    build time (each run paired with a UUID build of the same size, so that
    `build_vs_uuid` holds on a busy machine) and size, and lookups with 10%
    misses against a dict of the same data, interleaved in rounds as for UUID
    keys."""
    import kv
    from kv.gen import generate_file

    data = work / f"{n}-string.tsv"
    if not data.exists():
        generate_file(n, data, seed=1, keys="string")
    table = work / f"{n}-string.kvt"
    # Paired with UUID builds of the same size, alternating, so that the ratio
    # holds on a busy machine where absolute times drift between rounds.
    uuid_data, uuid_table = work / f"{n}.data", work / f"{n}-paired.kvt"
    runs, uuid_runs = [], []
    for _ in range(3):
        runs.append(run_build(data, table))
        uuid_runs.append(run_build(uuid_data, uuid_table))
    uuid_table.unlink()
    b = sorted(runs, key=lambda r: r["seconds"])[1]
    out = {
        "records": n,
        "build_seconds": round(b["seconds"], 3),
        "build_runs_seconds": [round(r["seconds"], 3) for r in runs],
        "uuid_build_seconds": round(statistics.median(r["seconds"] for r in uuid_runs), 3),
        "uuid_build_runs_seconds": [round(r["seconds"], 3) for r in uuid_runs],
        "build_vs_uuid": round(statistics.median(s["seconds"] / u["seconds"] for s, u in zip(runs, uuid_runs, strict=True)), 3),
        "peak_rss_kib": b["peak_rss_kib"],
        "input_bytes": data.stat().st_size,
        "table_bytes": table.stat().st_size,
    }
    out["size_ratio"] = round(out["table_bytes"] / out["input_bytes"], 3)
    with kv.open_table(table) as t:
        out["load_factor"] = t.meta["options"]["load_factor"]
    d = {}
    with open(data, "rb") as f:
        for line in f:
            k, v = line.rstrip(b"\n").split(b"\t", 1)
            d[k.decode()] = v
    rnd = random.Random(2)
    hits = rnd.sample(list(d), int(n_keys * 0.9))
    absent = [f"absent:{rnd.getrandbits(64):x}" for _ in range(n_keys - len(hits))]
    keys = hits + absent
    rnd.shuffle(keys)
    t = kv.open_table(table)
    kv_get, d_get = t.get, d.get
    contenders = {"kv": lambda: sum(1 for k in keys if kv_get(k) is not None), "dict": lambda: sum(1 for k in keys if d_get(k) is not None)}
    for name, fn in contenders.items():
        assert fn() == len(hits), name
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t.close()
    us = {name: statistics.median(ts) / len(keys) * 1e6 for name, ts in times.items()}
    out["lookups"] = {
        "keys": len(keys),
        "hits": len(hits),
        "rounds": rounds,
        "us_per_lookup": {k: round(v, 3) for k, v in us.items()},
        "kv_vs_dict": round(us["dict"] / us["kv"], 2),
        "uuid_kv_us_per_lookup": uuid_lookups["us_per_lookup"]["kv"],
    }
    return out


def bench_open(table: Path, repeats: int = 50) -> dict:
    import kv

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        t = kv.open_table(table)
        times.append(time.perf_counter() - t0)
        t.close()
    return {"median_ms": round(statistics.median(times) * 1e3, 3), "max_ms": round(max(times) * 1e3, 3), "repeats": repeats}


GEN_TIMED_UP_TO = 10_000_000  # sizes whose generation is timed even when the data file exists


def run_gen(path: Path, n: int) -> float:
    """`kv gen N -o path --seed 1` in a subprocess; wall seconds, interpreter start included."""
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "kv.cli", "gen", str(n), "-o", str(path), "--seed", "1"], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ensure_data(path: Path, n: int) -> float | None:
    """Generate the data file when missing; seconds `kv gen` took, or None when
    it existed and is too big to time again (over GEN_TIMED_UP_TO records)."""
    if not path.exists():
        return run_gen(path, n)
    if n > GEN_TIMED_UP_TO:
        return None
    fd, tmp = tempfile.mkstemp(prefix=f"gen-{n}-", suffix=".data", dir=path.parent)  # same disk as the real file
    os.close(fd)
    try:
        return run_gen(Path(tmp), n)
    finally:
        os.unlink(tmp)


def _smaps(field: str) -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (clean pages, no mapping left)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_scale(data: Path, table: Path, n_keys: int = 20_000) -> dict:
    """Lookup latency with the table cold (evicted from the page cache) and hot,
    and what the lookups cost this process in memory."""
    import kv

    keys, _ = lookup_keys(data, n_keys, 0.0, seed=3)
    evict(table)
    before = {f: _smaps(f) for f in ("Rss", "Private_Dirty", "Shared_Clean", "Private_Clean")}
    t = kv.open_table(table)
    get = t.get
    t0 = time.perf_counter()
    for k in keys:
        get(k)
    cold = (time.perf_counter() - t0) / len(keys) * 1e6
    for k in keys:  # now hot
        get(k)
    t0 = time.perf_counter()
    for k in keys:
        get(k)
    hot = (time.perf_counter() - t0) / len(keys) * 1e6
    after = {f: _smaps(f) for f in before}
    t.close()
    return {
        "cold_us_per_lookup": round(cold, 2),
        "hot_us_per_lookup": round(hot, 3),
        "lookups": len(keys),
        "memory_delta_kib": {f: after[f] - before[f] for f in before},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="size for the side-by-side comparisons")
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000", help="sizes for build scaling, open time, cold/hot lookups")
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default=str(ROOT / "bench-data"), help="directory for generated data (reused)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "engine.json"))
    ap.add_argument("--no-compare", action="store_true", help="only the per-size measurements (no LMDB, no dict)")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # other work on the machine skews absolute times
    }
    baseline = python_baseline_rss()
    result["python_baseline_rss_kib"] = baseline
    sizes = sorted({*([] if args.no_compare else [args.records]), *(int(s) for s in args.sizes.split(",") if s)})
    builds = {}
    for n in sizes:
        data = work / f"{n}.data"
        gen_seconds = ensure_data(data, n)
        table = work / f"{n}.kvt"
        # Builds are timed 3 times up to 10M records (the median is kept, every
        # run recorded): one run on this shared VM can be 10% off.
        runs = [run_build(data, table) for _ in range(3 if n <= 10_000_000 else 1)]
        b = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        b["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
        b["peak_rss_kib"] = max((r["peak_rss_kib"] or 0) for r in runs) or None
        b["records"] = n
        b["gen_seconds"] = None if gen_seconds is None else round(gen_seconds, 3)
        b["input_bytes"] = data.stat().st_size
        b["table_bytes"] = table.stat().st_size
        b["size_ratio"] = round(b["table_bytes"] / b["input_bytes"], 3)
        b["records_per_s"] = round(n / b["seconds"])
        if b["peak_rss_kib"]:
            b["bytes_per_record_over_baseline"] = round((b["peak_rss_kib"] - baseline) * 1024 / n, 1)
        b["open"] = bench_open(table)
        b["lookup"] = bench_scale(data, table)
        builds[n] = b
        gen = "not timed" if gen_seconds is None else f"{gen_seconds:.2f} s"
        print(
            f"{n:,}: gen {gen}, build {b['seconds']:.2f} s ({b['records_per_s']:,} rec/s), table {b['size_ratio']}x input, "
            f"peak RSS {b['peak_rss_kib']} KiB, open {b['open']['median_ms']} ms, lookup cold {b['lookup']['cold_us_per_lookup']} us "
            f"hot {b['lookup']['hot_us_per_lookup']} us",
            file=sys.stderr,
        )
    result["build"] = builds
    if 10 * args.records in builds and args.records in builds:
        result["build_scaling_10x"] = round(builds[10 * args.records]["seconds"] / builds[args.records]["seconds"], 2)
    if args.no_compare:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
        return 0

    n = args.records
    data = work / f"{n}.data"
    lm = work / f"{n}.lmdb"
    lmdb_runs = sorted(lmdb_load(data, lm) for _ in range(3))
    lmdb_seconds = lmdb_runs[1]  # the median of 3, as for kv's builds
    result["lmdb_build_seconds"] = round(lmdb_seconds, 3)
    result["lmdb_build_runs_seconds"] = [round(x, 3) for x in lmdb_runs]
    result["kv_build_vs_lmdb"] = round(lmdb_seconds / builds[n]["seconds"], 2)
    print(f"lmdb load {n:,}: {lmdb_seconds:.2f} s", file=sys.stderr)

    result["lookups"] = bench_lookups(data, work / f"{n}.kvt", lm, args.keys, args.rounds)
    print(f"lookups: {result['lookups']}", file=sys.stderr)
    result["string_keys"] = bench_string_keys(work, n, args.keys, args.rounds, result["lookups"])
    print(f"string keys: {result['string_keys']}", file=sys.stderr)

    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
