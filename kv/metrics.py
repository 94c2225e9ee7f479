"""Counters that add up across gunicorn workers.

The hot path only adds to plain ints in this process (`Counts`): an increment of
a prometheus_client value in multiprocess mode writes to an mmap'd file under a
lock, a few microseconds that the fast path cannot afford several times a
request. A background task flushes the ints into prometheus_client every
FLUSH_SECONDS (and at shutdown, and before this worker answers /v1/stats or
/metrics), so totals lag by at most that much. prometheus_client in
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `kv serve`) keeps one file
per worker; /metrics and /v1/stats sum them, and gunicorn's child_exit hook
marks dead workers so their gauges disappear while their counts stay in the
totals.
"""

from __future__ import annotations

import glob
import os
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

if TYPE_CHECKING:
    from .live import LiveTable
    from .table import Table

FLUSH_SECONDS = 0.05
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

REQUESTS = Counter("kv_requests", "HTTP requests by route and status", ["route", "status"])
LOOKUPS = Counter("kv_lookups", "Key lookups by outcome (batch keys included)", ["outcome"])
BATCHES = Counter("kv_batches", "Batch requests answered")
BATCH_SIZE = Histogram("kv_batch_size_keys", "Keys per batch request", buckets=BATCH_BUCKETS)
LATENCY = Histogram("kv_request_duration_seconds", "Time from request to response, in the worker", ["route"], buckets=LATENCY_BUCKETS)
TABLE_KEYS = Gauge("kv_table_keys", "Records in the table a live worker serves", ["generation"], multiprocess_mode="livemax")
TABLE_VALUE_BYTES = Gauge("kv_table_value_bytes", "Sum of value lengths in the served table", ["generation"], multiprocess_mode="livemax")
TABLE_BYTES = Gauge("kv_table_file_bytes", "Size of the served table file", ["generation"], multiprocess_mode="livemax")
WRITES = Counter("kv_writes", "Keys written (set or deleted) by committed writes", ["op"])
PROTOCOL_HITS = Counter(
    "kv_protocol_hits",
    "Hits answered inside the connection protocol, before ASGI (kv/http/protocol.py); "
    "also counted in kv_requests_total and kv_lookups_total",
)
WORKERS = Gauge("kv_workers", "Live worker processes by generation served", ["generation"], multiprocess_mode="livesum")

OUTCOMES = ("hit", "miss", "invalid")
_MIDPOINTS = (
    [b / 2 for b in LATENCY_BUCKETS[:1]]
    + [(a + b) / 2 for a, b in zip(LATENCY_BUCKETS, LATENCY_BUCKETS[1:], strict=False)]
    + [LATENCY_BUCKETS[-1]]
)


class Counts:
    """Per-process tallies the hot path adds to; flushed into prometheus_client.
    `fast_route` labels the fast path's hits (kv/http/routes.py: KEY.path)."""

    __slots__ = ("requests", "lookups", "batches", "latency", "fast", "protocol", "fast_route", "last_flush", "writes")

    def __init__(self, fast_route: str):
        self.requests: dict[tuple[str, int], int] = {}
        self.lookups = [0, 0, 0]  # hit, miss, invalid
        self.writes = [0, 0]  # keys set, keys deleted
        self.batches: list[int] = []
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts + [sum]
        # Fast-path hits: latency bucket counts only (their sum is estimated
        # from bucket midpoints; a hit takes microseconds).
        self.fast = [0] * (len(LATENCY_BUCKETS) + 1)
        # The same for hits answered in the connection protocol (kv/http/protocol.py),
        # counted apart only to tell how many took that path (kv_protocol_hits).
        self.protocol = [0] * (len(LATENCY_BUCKETS) + 1)
        self.fast_route = fast_route
        self.last_flush = time.monotonic()

    def request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        lat = self.latency.get(route)
        if lat is None:
            lat = self.latency[route] = [0] * (len(LATENCY_BUCKETS) + 2)
        lat[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        lat[-1] += seconds

    def flush(self) -> None:
        """Move the tallies into prometheus_client (cheap when there are none)."""
        self.last_flush = time.monotonic()
        requests, self.requests = self.requests, {}
        for (route, status), n in requests.items():
            REQUESTS.labels(route, str(status)).inc(n)
        lookups = self.lookups
        for i, outcome in enumerate(OUTCOMES):
            n = lookups[i]
            if n:
                lookups[i] = 0
                LOOKUPS.labels(outcome).inc(n)
        writes = self.writes
        for i, op in enumerate(("set", "delete")):
            n = writes[i]
            if n:
                writes[i] = 0
                WRITES.labels(op).inc(n)
        batches, self.batches = self.batches, []
        if batches:
            BATCHES.inc(len(batches))
            for size in batches:
                BATCH_SIZE.observe(size)
        for fast in (self.fast, self.protocol):
            if any(fast):
                n = sum(fast)
                hits = list(fast)
                for i in range(len(fast)):  # in place: the fast paths hold these lists
                    fast[i] = 0
                REQUESTS.labels(self.fast_route, "200").inc(n)
                if fast is self.protocol:
                    PROTOCOL_HITS.inc(n)
                child = LATENCY.labels(self.fast_route)
                for i, c in enumerate(hits):
                    if c:
                        child._buckets[i].inc(c)
                        child._sum.inc(c * _MIDPOINTS[i])
        latency, self.latency = self.latency, {}
        for route, counts in latency.items():
            child = LATENCY.labels(route)
            # prometheus_client keeps non-cumulative bucket values and a sum;
            # adding whole counts at once is what observe() does one at a time.
            for i, count in enumerate(counts[:-1]):
                if count:
                    child._buckets[i].inc(count)
            child._sum.inc(counts[-1])


class Totals(TypedDict):
    """The counters of /v1/stats, summed over all workers (totals())."""

    requests: int
    lookups: int
    hits: int
    misses: int
    invalid_keys: int
    batches: int
    batch_keys: int
    sets: int
    deletes: int
    workers: int
    by_status: dict[str, int]  # requests by status code


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Collector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector of the workers' files, surviving a file
    retired between its glob and its read (mark_process_dead, in the master,
    while a worker renders /metrics or /v1/stats during a reload): it
    raises FileNotFoundError there, which answered a 500. Such a read starts
    again from a new glob; the dead worker's counts are in `*_retired.db` by
    then (retire_file writes them before it deletes the file)."""

    ATTEMPTS = 5

    def collect(self):  # type: ignore[no-untyped-def]
        pattern = os.path.join(self._path, "*.db")
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                return self.merge(glob.glob(pattern), accumulate=True)
            except FileNotFoundError:
                if attempt == self.ATTEMPTS:
                    raise


def registry() -> CollectorRegistry:
    """A registry of every worker's values (or this process's, when not multiprocess)."""
    if multiprocess_dir():
        reg = CollectorRegistry()
        _Collector(reg)
        return reg
    from prometheus_client import REGISTRY

    return REGISTRY


def exposition() -> bytes:
    return generate_latest(registry())


def totals() -> Totals:
    """Counter totals summed over all workers, for /v1/stats."""
    out: dict[str, float] = {
        "requests": 0,
        "lookups": 0,
        "hits": 0,
        "misses": 0,
        "invalid_keys": 0,
        "batches": 0,
        "batch_keys": 0,
        "sets": 0,
        "deletes": 0,
        "workers": 0,
    }
    by_status: dict[str, float] = {}
    for metric in registry().collect():
        for s in metric.samples:
            if s.name == "kv_requests_total":
                out["requests"] += s.value
                st = s.labels.get("status", "")
                by_status[st] = by_status.get(st, 0) + s.value
            elif s.name == "kv_lookups_total":
                name = {"hit": "hits", "miss": "misses", "invalid": "invalid_keys"}.get(s.labels.get("outcome", ""))
                if name:
                    out[name] += s.value
            elif s.name == "kv_writes_total":
                name = {"set": "sets", "delete": "deletes"}.get(s.labels.get("op", ""))
                if name:
                    out[name] += s.value
            elif s.name == "kv_batches_total":
                out["batches"] += s.value
            elif s.name == "kv_batch_size_keys_sum":
                out["batch_keys"] += s.value
            elif s.name == "kv_workers":
                out["workers"] += s.value
    out["lookups"] = out["hits"] + out["misses"] + out["invalid_keys"]
    n = {k: int(v) for k, v in out.items()}
    return Totals(
        requests=n["requests"],
        lookups=n["lookups"],
        hits=n["hits"],
        misses=n["misses"],
        invalid_keys=n["invalid_keys"],
        batches=n["batches"],
        batch_keys=n["batch_keys"],
        sets=n["sets"],
        deletes=n["deletes"],
        workers=n["workers"],
        by_status={k: int(v) for k, v in sorted(by_status.items())},
    )


def lookups_by_worker() -> dict[str, int]:
    """Lookups (hits, misses, invalid keys) each live worker has counted, by
    pid, read from the workers' own files; dead workers' counts, folded into
    `*_retired.db`, appear under "retired". Shows that /v1/stats adds up every
    worker, and how evenly the kernel spreads connections over them."""
    import json

    from prometheus_client.mmap_dict import MmapedDict

    d = multiprocess_dir()
    if not d:
        return {str(os.getpid()): totals()["lookups"]}
    out: dict[str, int] = {}
    for path in glob.glob(os.path.join(d, "counter_*.db")):
        who = os.path.basename(path)[len("counter_") : -len(".db")]
        if who != "retired" and not _is_sibling(who):
            continue  # the master's own file (it counts nothing per request), or a worker gone since
        n = 0
        try:
            for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
                if json.loads(key)[1] == "kv_lookups_total":
                    n += value
        except (OSError, ValueError):
            continue  # a file being retired this instant
        out[who] = int(n)
    return dict(sorted(out.items()))


def _is_sibling(pid: str) -> bool:
    """This process, or a live process with the same parent (a worker of this server)."""
    if pid == str(os.getpid()):
        return True
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1]) == os.getppid()
    except (OSError, ValueError, IndexError):
        return False


def set_table_gauges(table: Table | LiveTable, label: str | None = None, previous: str | None = None) -> None:
    """The served table's gauges, labelled `label` (default its generation;
    a root's workers use the base generation, which writes do not change).
    `previous`: the label this worker served before (a publish or compaction
    moved it), whose gauges it no longer counts."""
    g = label or table.generation
    if previous and previous != g:
        for gauge in (TABLE_KEYS, TABLE_VALUE_BYTES, TABLE_BYTES, WORKERS):
            gauge.labels(previous).set(0)
    TABLE_KEYS.labels(g).set(len(table))
    TABLE_VALUE_BYTES.labels(g).set(table.value_bytes)
    TABLE_BYTES.labels(g).set(table.file_bytes)
    WORKERS.labels(g).set(1)


def mark_process_dead(pid: int) -> None:
    """gunicorn child_exit hook: drop a dead worker's live gauges and fold its
    counters and histograms into the `*_retired.db` files, so the directory
    holds one file per live worker, not one per worker ever started (every
    reload starts new ones), and the totals keep the dead worker's counts."""
    d = multiprocess_dir()
    if not d:
        return
    multiprocess.mark_process_dead(pid)
    for kind in ("counter", "histogram"):
        retire_file(os.path.join(d, f"{kind}_{pid}.db"), os.path.join(d, f"{kind}_retired.db"))


def retire_file(dead: str, archive: str) -> None:
    """Add every value of a dead worker's file into the archive file, then
    delete it. Only the gunicorn master calls this (workers never write the
    archive); a scrape in the instant between the two steps may count the
    dead worker twice or not at all, which the next scrape corrects."""
    from prometheus_client.mmap_dict import MmapedDict

    if not os.path.exists(dead):
        return
    into = MmapedDict(archive)
    try:
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
            total, _ = into.read_value(key)
            into.write_value(key, total + value, timestamp)
    finally:
        into.close()
    os.unlink(dead)
