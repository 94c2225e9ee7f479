#!/usr/bin/env python3
"""Write benchmark (issue 13): the targets of writes over immutable tables,
side by side in one run, every server `kv serve` (2 workers) on 127.0.0.1.

    python loadtest/bench_writes.py [--records 1000000] [--changes 100000] [--rounds 5] [--duration 10] [--out docs/bench/writes.json]

Roots (bench-data/writes/, made afresh each run from bench-data/N.kvt, the
table `kv gen N --seed 1` and `kv build` make for loadtest/bench_http.py):
  empty    `kv publish` of the table: a writable root with no changes
  pending  the same plus --changes changes (new values for as many distinct
           existing keys, POST /v1/write batches of 100 through kv.Client),
           served with --compact-changes equal to them: at the threshold
  writer   the same as empty; a paced writer adds to it (below)
  put-K, batch-K  copies of empty for round K's write runs (compaction off)

Each round runs these once (every second round in reverse order, with
loadtest/bench_http.py's paired_rounds), starting and stopping each server:
  ro          `kv serve TABLE`, read-only: today's rate (TABLE: the file
              the roots serve; their tables are hard links to it)
  rw_empty    `kv serve --root empty --writable`
  rw_pending  `kv serve --root pending --writable`
  rw_writer   `kv serve --root writer --writable` while 4 threads of this
              script PUT at --writer-rate a second in all (keep-alive
              connections; the rate achieved is recorded)
  put         sequential PUTs of --value-bytes over one keep-alive
              connection (wrk -c1), on put-K
  batch       sequential POST /v1/write of 100 keys over one connection (wrk -c1), on put-K
The read runs are bench_http's (wrk -t1 -c64, random existing keys from a
preloaded array, 2 s warm-up); a ratio such as rw_empty / ro is taken within
each round and the headline is the median of those. After each read run the
workers' /proc/PID/smaps_rollup is read: memory at the threshold is
rw_pending's largest Private_Dirty minus ro's, per round, median.

Then compaction, on the pending root: the read load is wrk at half of
rw_pending's median rate (bench_http's paced calibration, 64 connections).
One compaction alone (a PUT crosses the threshold; the worker that commits
it starts `python -m kv.compact`; done when the head page names a new epoch)
gives its time T; then each round: `kv rollback` (back to the changes), a
read run of floor(T) s without compaction, a read run of floor(T) s started
as the PUT that starts a compaction returns (a compaction under load takes
at least T, so the run lies inside it: `covered` says how much did). The
headline is the median of the per-round p99 ratios during / without.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http as bh  # Server, wrk and its Lua scripts, paired rounds

from kv.client import Client
from kv.head import Head, head_path

ROOTS = bh.WORK / "writes"
TOKEN = "bench-write-token-0123456789abcdef"
ENV = {"KV_WRITE_TOKEN": TOKEN}
NO_COMPACTION = ["--compact-changes", str(1 << 40), "--compact-bytes", str(1 << 50)]
BATCH = 100
WRITER_CONNECTIONS = 4  # the paced writer's (PacedWriter)
# Full size: what issue 13's targets are stated for; a run below any of these is marked small.
FULL = {"records": 1_000_000, "changes": 100_000, "duration": 10, "rounds": 5}


def kv_serve_root(root: Path, *flags: str) -> list[str]:
    """`kv serve --root ROOT --writable` as bench_http.kv_serve starts a table (2 workers)."""
    return [str(bh.BIN / "kv"), "serve", "--root", str(root), "--writable", "--workers", "2", "--bind", "127.0.0.1:{port}", *flags]


def value(i: int, size: int) -> str:
    """A value of `size` bytes, different for each i (ASCII: it goes into Lua and JSON as it is)."""
    return (f"v{i:09d}-" * (size // 11 + 1))[:size]


# -- roots --------------------------------------------------------------------------------------


def publish(table: Path, root: Path) -> None:
    subprocess.run(
        [str(bh.BIN / "kv"), "publish", str(table), "--root", str(root)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _link_tables(src: str, dst: str) -> None:
    """Tables (immutable) are hard-linked, everything else copied."""
    if src.endswith(".kvt"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_root(src: Path, dst: Path) -> Path:
    """A copy of a root no server is running on (`kv serve` rebuilds the head
    page), its tables hard links: every server of a run reads the same file
    through the same page-cache pages. (Two copies of one table can differ in
    speed: in a run on this VM, `kv serve` of a fresh copy of a table answered
    about 10% more hits a second than of the table it was copied from.)"""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("kv.pid"), copy_function=_link_tables)
    return dst


def base_table(root: Path) -> Path:
    """The table file a root serves."""
    return root / os.readlink(root / "current")


def fill(url: str, keys: list[str], size: int) -> dict:
    """New values for `keys`, in POST /v1/write batches of 100 through kv.Client (keep-alive)."""
    times = []
    t0 = time.perf_counter()
    with Client(url, token=TOKEN, timeout=60) as c:
        for at in range(0, len(keys), BATCH):
            items = {k: value(at + i, size) for i, k in enumerate(keys[at : at + BATCH])}
            t = time.perf_counter()
            c.set_many(items)
            times.append(time.perf_counter() - t)
    secs = time.perf_counter() - t0
    return {
        "keys": len(keys),
        "batches": len(times),
        "seconds": round(secs, 2),
        "keys_per_s": round(len(keys) / secs),
        "batch_latency_ms": bh._summary_ms(times),
    }


def make_roots(table: Path, data: Path, args) -> tuple[dict[str, Path], dict]:
    """The roots (see the top of this file), and how the fill went."""
    shutil.rmtree(ROOTS, ignore_errors=True)
    ROOTS.mkdir(parents=True)
    empty = ROOTS / "empty"
    publish(table, empty)
    roots = {"empty": empty, "pending": copy_root(empty, ROOTS / "pending"), "writer": copy_root(empty, ROOTS / "writer")}
    changed = bh.sample_keys(data, args.changes, seed=2)
    with bh.Server("fill", kv_serve_root(roots["pending"], *NO_COMPACTION), ENV) as srv:
        srv.wait_ready("/readyz")
        filled = fill(srv.url, changed, args.value_bytes)
    print(f"fill: {args.changes:,} changes in {filled['seconds']} s ({filled['keys_per_s']:,} keys/s)", file=sys.stderr)
    return roots, filled


# -- wrk scripts for writes ---------------------------------------------------------------------------


def lua_put(keys: list[str], size: int) -> Path:
    """PUT /v1/keys/KEY of a `size`-byte value, random keys (bench_http.lua_requests)."""
    before = [f'local value = "{value(0, size)}"', f"local headers = {{['Authorization'] = 'Bearer {TOKEN}'}}"]
    each = "wrk.format('PUT', '/v1/keys/' .. x, headers, value)"
    return bh.lua_requests(f"put-{len(keys)}-{size}.lua", "keys", [f'"{k}"' for k in keys], each, before=before)


def lua_write_batch(keys: list[str], size: int, bodies: int = 200) -> Path:
    """POST /v1/write {"set": {100 random keys: values}}, from preloaded bodies (as bench_http.lua_batch)."""
    rnd = random.Random(6)
    values = [
        json.dumps(json.dumps({"set": {k: value(b * BATCH + i, size) for i, k in enumerate(rnd.sample(keys, BATCH))}}))
        for b in range(bodies)
    ]
    before = [f"local headers = {{['Authorization'] = 'Bearer {TOKEN}', ['Content-Type'] = 'application/json'}}"]
    return bh.lua_requests(
        f"write-batch-{BATCH}-{size}.lua", "bodies", values, "wrk.format('POST', '/v1/write', headers, x)", before=before
    )


# -- the paced writer ------------------------------------------------------------------------------


class PacedWriter:
    """PUTs at `rate` a second on a fixed schedule (the i-th is due i / rate s
    after the start), sent by `connections` threads with a keep-alive
    connection each: a write that waits behind a busy worker does not hold
    back the ones due after it, so the rate holds unless the server cannot
    keep up (then `achieved_per_s` says so). http.client, not kv.Client:
    httpx costs about 1 ms of CPU a request here, http.client a quarter of
    that, and this CPU is taken from the server being measured."""

    def __init__(self, url: str, keys: list[str], rate: float, size: int, connections: int = WRITER_CONNECTIONS):
        self.url, self.keys, self.rate, self.size = url, keys, rate, size
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.next = 0  # index of the next write due
        self.times: list[float] = []
        self.failed = 0
        self.t0 = 0.0
        self.threads = [threading.Thread(target=self._send, args=(n,), name=f"paced-writer-{n}", daemon=True) for n in range(connections)]

    def start(self) -> None:
        self.t0 = time.perf_counter()
        for t in self.threads:
            t.start()

    def _send(self, n: int) -> None:
        rnd = random.Random(n)
        url = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            while True:
                with self.lock:
                    i, self.next = self.next, self.next + 1
                wait = self.t0 + i / self.rate - time.perf_counter()
                if self.halt.wait(max(0.0, wait)):
                    return
                t = time.perf_counter()
                try:
                    conn.request("PUT", f"/v1/keys/{rnd.choice(self.keys)}", value(i, self.size).encode(), headers)
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        raise RuntimeError(f"PUT answered {r.status}")
                    with self.lock:
                        self.times.append(time.perf_counter() - t)
                except (OSError, http.client.HTTPException, RuntimeError) as e:
                    conn.close()  # http.client reconnects at the next request
                    with self.lock:
                        self.failed += 1
                    print(f"paced writer: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            conn.close()

    def stop(self) -> dict:
        self.halt.set()
        elapsed = time.perf_counter() - self.t0
        for t in self.threads:
            t.join()
        n = len(self.times)
        return {
            "target_per_s": self.rate,
            "achieved_per_s": round(n / elapsed, 1),
            "writes": n,
            "failed": self.failed,
            "connections": len(self.threads),
            "seconds": round(elapsed, 2),
            "latency_ms": bh._summary_ms(self.times) if n else {},
        }


def lookup_cost(roots: dict[str, Path], keys: list[str]) -> dict:
    """Nanoseconds per hit of the protocol path's lookup (kv/http/fastpath.py
    plain_lookup) in this process: on the table, on the empty root (head check
    + base lookup) and on the root with the changes pending (head check +
    overlay + base); the best of 15 repeats of 1,000 keys, 20 times each."""
    from kv.http.fastpath import plain_lookup
    from kv.http.state import State
    from kv.live import LiveTable
    from kv.table import open_table

    sample = [k.encode() for k in keys[:1000]]
    lookups = {
        "table": plain_lookup(State(open_table(base_table(roots["empty"])), 1000)),
        "root_no_changes": plain_lookup(State(LiveTable(roots["empty"]), 1000)),
        "root_changes_pending": plain_lookup(State(LiveTable(roots["pending"]), 1000)),
    }
    best = dict.fromkeys(lookups, float("inf"))
    for _ in range(15):  # interleaved, so drift favours none
        for name, f in lookups.items():
            t = time.perf_counter()
            for _ in range(20):
                for k in sample:
                    f(k)
            best[name] = min(best[name], (time.perf_counter() - t) / (20 * len(sample)))
    out = {name: round(v * 1e9) for name, v in best.items()}
    print(f"lookup in process, ns: {out}", file=sys.stderr)
    return out


# -- the rounds --------------------------------------------------------------------------------------


def workers(srv: bh.Server) -> list[int]:
    return [pid for pid in srv.pids() if pid != srv.proc.pid]


def measured(srv: bh.Server, run) -> dict:
    """`run()` (a wrk run), with the CPU the workers used per request it made."""
    pids = workers(srv)
    before = bh.cpu_seconds(pids)
    r = run()
    r["worker_cpu_us_per_request"] = round((bh.cpu_seconds(pids) - before) / max(1, r["requests"]) * 1e6, 1)
    return r


def fsync_probe(directory: Path, n: int = 300) -> dict:
    """What the disk under the roots charges a commit: `pwrite` of 200 bytes then
    `fdatasync`, n times (milliseconds). It varies with the other work on the machine."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    times = []
    try:
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, b"x" * 200, i * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return bh._summary_ms(times)


def worker_memory(srv: bh.Server) -> dict:
    """Per worker (not the master): Private_Dirty, USS (Private_Clean + Private_Dirty), Pss, Rss in KiB."""
    out = []
    for pid in workers(srv):
        m = bh._smaps(pid)
        out.append(
            {
                "pid": pid,
                "Private_Dirty": m["Private_Dirty"],
                "uss": m["Private_Clean"] + m["Private_Dirty"],
                "Pss": m["Pss"],
                "Rss": m["Rss"],
            }
        )
    return {"workers": out, "max_private_dirty_kib": max(w["Private_Dirty"] for w in out), "max_uss_kib": max(w["uss"] for w in out)}


def rounds(args, roots: dict[str, Path], keys: list[str]) -> dict:
    get = bh.lua_get(keys)
    put_keys = keys[:10_000]
    servers = {
        "ro": bh.Server("ro", bh.kv_serve(base_table(roots["empty"]))),  # the very file the roots serve
        "rw_empty": bh.Server("rw_empty", kv_serve_root(roots["empty"]), ENV),
        "rw_pending": bh.Server("rw_pending", kv_serve_root(roots["pending"], "--compact-changes", str(args.changes)), ENV),
        "rw_writer": bh.Server("rw_writer", kv_serve_root(roots["writer"]), ENV),
    }
    scripts = {"put": lua_put(put_keys, args.value_bytes), "batch": lua_write_batch(put_keys, args.value_bytes)}
    round_of = {"put": 0, "batch": 0}

    def read(name: str) -> dict:
        srv = servers[name]
        with srv:
            srv.wait_ready(f"/v1/keys/{keys[0]}")
            bh.wrk(srv.url, get, args.connections, 2)  # warm-up: page cache, connections, the overlay's first lookups
            before = bh.protocol_hits(srv.url)
            writer = PacedWriter(srv.url, keys, args.writer_rate, args.value_bytes) if name == "rw_writer" else None
            if writer:
                writer.start()
            r = measured(srv, lambda: bh.wrk(srv.url, get, args.connections, args.duration))
            if writer:
                r["writer"] = w = writer.stop()
                print(
                    f"  paced writer: {w['achieved_per_s']} writes/s (target {w['target_per_s']:g}), p50 {w['latency_ms'].get('p50')} ms",
                    file=sys.stderr,
                )
            r["memory"] = worker_memory(srv)
            r["protocol_share"] = bh.protocol_share(srv.url, before, r)
            bh.check_answers(name, r)
            return r

    def write(name: str) -> dict:
        round_of[name] += 1
        root = copy_root(roots["empty"], ROOTS / f"{name}-{round_of[name]}")
        try:
            with bh.Server(name, kv_serve_root(root, *NO_COMPACTION), ENV) as srv:
                srv.wait_ready("/readyz")
                bh.wrk(srv.url, scripts[name], 1, 1)  # warm-up: the log open, the connection
                r = measured(srv, lambda: bh.wrk(srv.url, scripts[name], 1, args.duration))
                if name == "batch":
                    r["keys_per_s"] = r["rps"] * BATCH
                bh.check_answers(name, r)
                return r
        finally:
            shutil.rmtree(root, ignore_errors=True)

    runs = bh.paired_rounds([*servers, "put", "batch"], args.rounds, lambda name: read(name) if name in servers else write(name))
    return runs


def summarize(runs: dict) -> dict:
    out: dict = {
        "order": "each round runs every contender once, every second round in reverse order",
        "rps_median": {name: round(statistics.median(r["rps"] for r in rs)) for name, rs in runs.items()},
        "paired_ratios": {},
    }
    for name in ("rw_empty", "rw_pending", "rw_writer"):
        paired, out[f"{name}_vs_ro"] = bh.paired_ratio(runs[name], runs["ro"], 3)
        out["paired_ratios"][f"{name}_vs_ro"] = paired
    put, batch = runs["put"], runs["batch"]
    out["put"] = {
        "rps_median": round(statistics.median(r["rps"] for r in put)),
        "p50_ms_median": round(statistics.median(r["latency_ms"]["p50"] for r in put), 3),
        "p99_ms_median": round(statistics.median(r["latency_ms"]["p99"] for r in put), 3),
    }
    out["batch"] = {
        "keys_per_s_median": round(statistics.median(r["keys_per_s"] for r in batch)),
        "p50_ms_median": round(statistics.median(r["latency_ms"]["p50"] for r in batch), 3),
    }
    out["worker_cpu_us_per_request_median"] = {
        name: round(statistics.median(r["worker_cpu_us_per_request"] for r in rs), 1) for name, rs in runs.items()
    }
    # The workers' CPU a write costs under the read load: what rw_writer's workers used
    # beyond rw_empty's per read in the same round, over the writes made meanwhile.
    extra = [
        (w["worker_cpu_us_per_request"] - e["worker_cpu_us_per_request"]) * w["requests"] / max(1, w["writer"]["writes"]) / 1000
        for w, e in zip(runs["rw_writer"], runs["rw_empty"], strict=True)
    ]
    out["cpu_ms_per_write_under_reads"] = [round(x, 2) for x in extra]
    out["cpu_ms_per_write_under_reads_median"] = round(statistics.median(extra), 2)
    writer = [r["writer"] for r in runs["rw_writer"]]
    out["writer"] = {
        "achieved_per_s_median": statistics.median(w["achieved_per_s"] for w in writer),
        "achieved_per_s_min": min(w["achieved_per_s"] for w in writer),
        "p50_ms_median": round(statistics.median(w["latency_ms"]["p50"] for w in writer if w["latency_ms"]), 3),
    }
    mib = 1 / 1024
    over = [
        (p["memory"]["max_private_dirty_kib"] - r["memory"]["max_private_dirty_kib"]) * mib
        for p, r in zip(runs["rw_pending"], runs["ro"], strict=True)
    ]
    over_uss = [
        (p["memory"]["max_uss_kib"] - r["memory"]["max_uss_kib"]) * mib for p, r in zip(runs["rw_pending"], runs["ro"], strict=True)
    ]
    out["memory"] = {
        "what": "per round: the largest worker Private_Dirty (and USS) of rw_pending minus ro's, MiB",
        "ro_private_dirty_mib_median": round(statistics.median(r["memory"]["max_private_dirty_kib"] for r in runs["ro"]) * mib, 1),
        "pending_private_dirty_mib_median": round(
            statistics.median(r["memory"]["max_private_dirty_kib"] for r in runs["rw_pending"]) * mib, 1
        ),
        "private_dirty_over_ro_mib": [round(x, 1) for x in over],
        "private_dirty_over_ro_mib_median": round(statistics.median(over), 1),
        "uss_over_ro_mib": [round(x, 1) for x in over_uss],
        "uss_over_ro_mib_median": round(statistics.median(over_uss), 1),
    }
    return out


# -- compaction ----------------------------------------------------------------------------------------


def cross_threshold(url: str, root: Path, key: str, val: str) -> int:
    """PUT one key: the write that crosses the threshold, so the worker that
    commits it starts a compaction. Returns the epoch before it."""
    head = Head(head_path(root))
    read = head.read()
    head.close()
    assert read is not None, f"{root}/head is being rewritten"
    with Client(url, token=TOKEN, timeout=30) as c:
        c.set(key, val)
    return read[1].epoch


def wait_epoch(root: Path, epoch: int, timeout: float = 900) -> float:
    """Seconds until the head page names an epoch other than `epoch` (the compaction switched the base)."""
    head = Head(head_path(root))
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout:
            now = head.read()
            if now is not None and now[1].epoch != epoch:
                return time.perf_counter() - t0
            time.sleep(0.005)
    finally:
        head.close()
    raise RuntimeError(f"no compaction of {root} within {timeout:g} s of the write that crossed the threshold")


def rollback(root: Path) -> None:
    subprocess.run([str(bh.BIN / "kv"), "rollback", "--root", str(root)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def compaction(args, root: Path, keys: list[str], peak_rps: int) -> dict:
    srv = bh.Server("compaction", kv_serve_root(root, "--compact-changes", str(args.changes)), ENV)
    out: dict = {"changes": args.changes, "threshold": args.changes, "runs": []}
    with srv, ThreadPoolExecutor(1) as pool:
        srv.wait_ready(f"/v1/keys/{keys[0]}")
        bh.wrk(srv.url, bh.lua_get(keys), args.connections, 2)
        load = bh.paced(srv.url, keys, 0.5 * peak_rps, args.connections, args.duration)
        script = bh.lua_get(keys, load["delay_ms"])
        out["load"] = {
            "what": f"wrk -c{args.connections}, each connection waiting {load['delay_ms']} ms before each request: "
            "half of rw_pending's median rate (bench_http.paced)",
            "target_rps": load["target_rps"],
            "calibrated_run": load,
        }
        alone = wait_epoch(root, cross_threshold(srv.url, root, keys[0], value(0, args.value_bytes)))
        window = max(1, int(alone))
        out["alone_s"], out["window_s"] = round(alone, 2), window
        print(f"compaction alone: {alone:.2f} s; read runs of {window} s", file=sys.stderr)
        for rnd in range(args.rounds):
            rollback(root)  # the changes are pending again; the workers switch at their next request
            bh.wrk(srv.url, script, args.connections, 2)  # warm-up: the workers reopen the old base and replay its log
            without = bh.wrk(srv.url, script, args.connections, window)
            epoch = cross_threshold(srv.url, root, keys[1], value(rnd + 1, args.value_bytes))
            during = pool.submit(bh.wrk, srv.url, script, args.connections, window)
            seconds = wait_epoch(root, epoch)
            r = {"round": rnd + 1, "seconds": round(seconds, 2), "without": without, "during": during.result()}
            r["p99_ratio"] = round(r["during"]["latency_ms"]["p99"] / without["latency_ms"]["p99"], 3)
            r["covered"] = round(min(1.0, seconds / window), 3)  # the share of the during run the compaction lasted
            out["runs"].append(r)
            print(
                f"compaction round {rnd + 1}: {seconds:.2f} s; read p99 {without['latency_ms']['p99']} ms without, "
                f"{r['during']['latency_ms']['p99']} ms during ({r['p99_ratio']}x; {without['rps']:,} / {r['during']['rps']:,} req/s)",
                file=sys.stderr,
            )
    runs = out["runs"]
    out["seconds_median"] = round(statistics.median(r["seconds"] for r in runs), 2)
    out["p99_without_ms_median"] = round(statistics.median(r["without"]["latency_ms"]["p99"] for r in runs), 3)
    out["p99_during_ms_median"] = round(statistics.median(r["during"]["latency_ms"]["p99"] for r in runs), 3)
    out["p99_ratio"] = round(statistics.median(r["p99_ratio"] for r in runs), 3)
    return out


# -- targets and the run ----------------------------------------------------------------------------------


def targets(s: dict, c: dict | None) -> dict:
    """Issue 13's targets: what each asks, the measured figure, and whether it is reached (on the median)."""

    def row(what: str, measured: float, limit: float, at_least: bool) -> dict:
        ok = measured >= limit if at_least else measured <= limit
        return {"target": what, "measured": measured, "limit": limit, "reached": "yes" if ok else "not reached"}

    out = {
        "put_rate": row("sequential PUT, one keep-alive connection: >= 500/s", s["put"]["rps_median"], 500, True),
        "put_p50": row("... p50 <= 2 ms", s["put"]["p50_ms_median"], 2.0, False),
        "batch_keys": row("batches of 100 (POST /v1/write): >= 20,000 keys/s", s["batch"]["keys_per_s_median"], 20_000, True),
        "reads_no_changes": row("GET hits, writable root with no pending changes / read-only: >= 0.97", s["rw_empty_vs_ro"], 0.97, True),
        "reads_pending": row("GET hits with the changes pending / read-only: >= 0.9", s["rw_pending_vs_ro"], 0.9, True),
        "reads_writer": row("GET hits while a writer commits 100 writes/s / read-only: >= 0.8", s["rw_writer_vs_ro"], 0.8, True),
        "memory": row(
            "per-worker private memory at the threshold, above a read-only worker's: <= 64 MiB",
            s["memory"]["private_dirty_over_ro_mib_median"],
            64,
            False,
        ),
    }
    if c:
        out["compaction_p99"] = row("read p99 during a compaction / without: <= 2", c["p99_ratio"], 2.0, False)
        out["compaction_time"] = {"target": "compaction time: reported", "measured": c["seconds_median"], "reached": "reported"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=FULL["records"], help="records of the base table (default 1,000,000)")
    ap.add_argument("--changes", type=int, default=FULL["changes"], help="pending changes, and the compaction threshold (default 100,000)")
    ap.add_argument("--rounds", type=int, default=FULL["rounds"], help="paired rounds, and compactions (default 5)")
    ap.add_argument("--duration", type=float, default=FULL["duration"], help="seconds of each measured wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections of the read runs (default 64)")
    ap.add_argument("--writer-rate", type=float, default=100, help="PUTs a second of the paced writer (default 100)")
    ap.add_argument("--value-bytes", type=int, default=100, help="bytes of each value written (default 100)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: compaction")
    ap.add_argument("--out", default=str(bh.ROOT / "docs" / "bench" / "writes.json"))
    args = ap.parse_args()
    if not 0 < args.changes <= args.records:
        ap.error(f"--changes must be 1 to --records ({args.records:,}): the changes are new values for existing keys")
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        ap.error("--rounds, --duration and --connections must be at least 1")
    if args.writer_rate <= 0 or args.value_bytes < 0:
        ap.error("--writer-rate must be above 0 and --value-bytes not below 0")

    load_start = os.getloadavg()
    small = [f"{k} {getattr(args, k):,g} (full: {v:,})" for k, v in FULL.items() if getattr(args, k) < v]
    data, table = bh.ensure_table(args.records)
    keys = bh.sample_keys(data, 100_000)
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "small_run": bool(small),
        "scale": ("small run, not the targets' size: " + ", ".join(small)) if small else "full size (the targets' size)",
        "load_average": {"start": [round(x, 2) for x in load_start]},
        "parameters": {
            "records": args.records,
            "changes": args.changes,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "workers": 2,
            "writer_rate": args.writer_rate,
            "writer_connections": WRITER_CONNECTIONS,
            "value_bytes": args.value_bytes,
            "batch_keys": BATCH,
            "read_keys": len(keys),
        },
        "wrk": f"reads: wrk -t1 -c{args.connections} -d{max(1, round(args.duration))}s, random existing keys from a preloaded array; "
        f"writes: wrk -t1 -c1 (one keep-alive connection), random keys of {min(len(keys), 10_000):,}",
    }
    roots, result["fill"] = make_roots(table, data, args)
    result["fsync_ms"] = {"what": "pwrite of 200 bytes + fdatasync on the roots' disk, 300 times", "start": fsync_probe(ROOTS)}
    result["lookup_ns"] = lookup_cost(roots, keys)
    runs = rounds(args, roots, keys)
    result["rounds"] = runs
    result["summary"] = summary = summarize(runs)
    comp = None
    if "compaction" not in args.skip.split(","):
        comp = result["compaction"] = compaction(args, roots["pending"], keys, summary["rps_median"]["rw_pending"])
    result["fsync_ms"]["end"] = fsync_probe(ROOTS)
    result["targets"] = targets(summary, comp)
    result["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    for name, t in result["targets"].items():
        print(f"target {name}: {t['measured']} ({t['target']}): {t['reached']}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    shutil.rmtree(bh.LUA_DIR, ignore_errors=True)
    shutil.rmtree(ROOTS, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
