#!/usr/bin/env python3
"""HTTP benchmark: kv against the ceiling of its stack and the typical solution,
side by side in one run, every contender started here on 127.0.0.1 and driven
by wrk with random keys.

    python loadtest/bench_http.py [--records 1000000] [--duration 3] [--rounds 12] [--out docs/bench/http.json]

Contenders (2 gunicorn workers with uvicorn-worker unless noted):
  ceiling          bare ASGI app, constant body              (loadtest/contenders/bare_asgi.py)
  ceiling_kvworker the same app under kv's worker class      (-k kv.worker.KVWorker)
  kv               `kv serve TABLE` (hits answered in the protocol, kv/http/protocol.py; ASGI fast path; FastAPI)
  raw_protocol     a plain uvloop + httptools protocol doing the same lookup, 2 forked
                   processes on one socket: the limit of Python HTTP here (loadtest/contenders/raw_protocol.py)
  bare_lookup      bare ASGI app doing the mmap table lookup (loadtest/contenders/bare_lookup.py)
  fastapi_route    the same lookup behind a plain FastAPI route
  typical          FastAPI + dict of the whole file, one uvicorn process

Every contender is started once and stays up; every round runs each of them
once (every second round in reverse order, so drift over a round favours no
one); a ratio such as kv / ceiling is taken within each round and the
headline is the median of those paired ratios (the ratio of the best rounds
is kept beside it). Rounds are many and short because this VM's speed swings
up to 3x within a minute; each run also records its server's CPU time per
request, which depends far less on the neighbours.

Then for kv: latency at concurrency 1 and at 50% of its peak rate (the
per-connection wrk delay calibrated by short runs until the achieved rate is
within 5% of the target), batch throughput (batches of 100 keys), total PSS
against worker count (kv and the dict solution, after 200k random lookups),
and time from launch to the first 200 for a small and a large table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / "bench-data"
LUA_DIR = Path(tempfile.mkdtemp(prefix="kv-bench-lua-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes ---------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict | None = None):
        self.name = name
        self.port = free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("PYTHONPATH", str(ROOT))
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        return self

    def wait_ready(self, path: str, timeout: float = 120.0) -> float:
        """Poll until `path` answers 200; return seconds since start."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    def pids(self) -> list[int]:
        """The server's whole process tree (master and workers)."""
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def pss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def gunicorn(app: str, workers: int = 2, worker_class: str = "uvicorn_worker.UvicornWorker") -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "-k",
        worker_class,
        "-w",
        str(workers),
        "-b",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--keep-alive",
        "5",
        app,
    ]


def raw_protocol(workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "loadtest.contenders.raw_protocol", "--port", "{port}", "--workers", str(workers)]


def kv_serve(path: Path, workers: int = 2) -> list[str]:
    return [str(BIN / "kv"), "serve", str(path), "--workers", str(workers), "--bind", "127.0.0.1:{port}"]


def typical(workers: int = 1) -> list[str]:
    if workers == 1:
        return [
            str(BIN / "uvicorn"),
            "loadtest.contenders.fastapi_dict:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    return gunicorn("loadtest.contenders.fastapi_dict:app", workers)


# -- wrk -----------------------------------------------------------------------------

DONE = """
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"errors_status":%d,"lat_mean_us":%f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def lua_requests(name: str, items: str, values: list[str], each: str, before: Sequence[str] = (), after: Sequence[str] = ()) -> Path:
    """A wrk script (LUA_DIR/name) whose request() returns one of a preloaded
    array of requests at random: request() only indexes an array, since Lua
    work there steals the server's CPU. The requests are built in init, not
    at load: wrk sets the Host header just before init, and kv answers a
    request without Host with 400 (RFC 9112, 3.2). `items`: the name of the
    Lua array of `values` (Lua expressions); `each`: the Lua expression of a
    request from one of them, `x`; `before`, `after`: more lines of Lua."""
    body = [
        f"local {items} = {{",
        ",\n".join(values),
        "}",
        *before,
        "local reqs, n = {}, 0",
        f"init = function(args) for i, x in ipairs({items}) do reqs[i] = {each} end n = #reqs end",
        "request = function() return reqs[math.random(n)] end",
        *after,
    ]
    path = LUA_DIR / name
    path.write_text("\n".join(body) + DONE)
    return path


def lua_get(keys: list[str], delay_ms: float | None = None, tag: str = "get") -> Path:
    """A wrk script that requests random keys (lua_requests).

    With `delay_ms`, each connection waits that long before each request. wrk
    takes whole milliseconds, so a fractional delay is dithered: floor or
    floor + 1 at random, averaging `delay_ms`."""
    after = []
    if delay_ms is not None:
        whole, frac = int(delay_ms), delay_ms - int(delay_ms)
        after.append(f"delay = function() if math.random() < {frac:.4f} then return {whole + 1} end return {whole} end")
        delay_ms = round(delay_ms, 4)
    return lua_requests(
        f"{tag}-{len(keys)}-{delay_ms}.lua", "keys", [f'"{k}"' for k in keys], "wrk.format('GET', '/v1/keys/' .. x)", after=after
    )


def lua_batch(keys: list[str], size: int, bodies: int = 500) -> Path:
    """POST /v1/batch of `size` random keys, from `bodies` preloaded bodies."""
    rnd = random.Random(5)
    values = [json.dumps(json.dumps({"keys": rnd.sample(keys, size)})) for _ in range(bodies)]
    return lua_requests(f"batch-{size}.lua", "bodies", values, "wrk.format('POST', '/v1/batch', {['Content-Type']='application/json'}, x)")


def wrk(url: str, script: Path, connections: int = 64, duration: float = 10, threads: int = 1) -> dict:
    duration = max(1, round(duration))  # wrk takes whole seconds ("2.0s" is a usage error)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s", "-s", str(script), url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"WRKJSON (\{.*\})", p.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {p.stdout}\n{p.stderr}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    errors = sum(v for k, v in r.items() if k.startswith("errors_"))
    return {
        "rps": round(r["requests"] / secs),
        "requests": r["requests"],
        "errors": errors,
        "errors_status": r["errors_status"],
        "connections": connections,
        "duration_s": round(secs, 2),
        "latency_ms": {q: round(r[f"{q}_us"] / 1000, 3) for q in ("p50", "p90", "p99", "p999", "max")}
        | {"mean": round(r["lat_mean_us"] / 1000, 3)},
        "command": " ".join(cmd),
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far (/proc/PID/stat;
    a process gone meanwhile counts nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def check_answers(name: str, r: dict) -> None:
    """A run whose answers were errors measured the error path: say so loudly."""
    if r["errors_status"] > 0.001 * max(1, r["requests"]):
        print(f"WARNING {name}: {r['errors_status']:,} of {r['requests']:,} answers were not 2xx/3xx", file=sys.stderr)


def protocol_hits(url: str) -> float:
    """kv_protocol_hits_total summed over the workers (/metrics lags by up to about 1 s)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kv_protocol_hits_total"))


def protocol_share(url: str, before: float, run: dict) -> float:
    """The share of a kv run's requests answered in the protocol (kv/http/protocol.py):
    near 1 when the path measured is the protocol path."""
    time.sleep(1.2)  # /metrics is rendered at most once a second
    share = round((protocol_hits(url) - before) / max(1, run["requests"]), 3)
    if share < 0.95:
        print(f"WARNING kv: only {share:.1%} of the requests were answered in the protocol", file=sys.stderr)
    return share


# -- the benchmark -------------------------------------------------------------------------


def ensure_table(n: int) -> tuple[Path, Path]:
    data, table = WORK / f"{n}.data", WORK / f"{n}.kvt"
    WORK.mkdir(exist_ok=True)
    if not data.exists():
        subprocess.run([str(BIN / "kv"), "gen", str(n), "-o", str(data), "--seed", "1"], check=True)
    if not table.exists() or table.stat().st_mtime < data.stat().st_mtime:
        subprocess.run([str(BIN / "kv"), "build", str(data), "-o", str(table)], check=True, stderr=subprocess.DEVNULL)
    return data, table


def ensure_string_table(n: int) -> tuple[Path, Path]:
    """The string-key table (kv gen --keys string, as bench_engine.py makes it)."""
    data, table = WORK / f"{n}-string.tsv", WORK / f"{n}-string.kvt"
    WORK.mkdir(exist_ok=True)
    if not data.exists():
        subprocess.run([str(BIN / "kv"), "gen", str(n), "-o", str(data), "--seed", "1", "--keys", "string"], check=True)
    if not table.exists() or table.stat().st_mtime < data.stat().st_mtime:
        subprocess.run([str(BIN / "kv"), "build", str(data), "-o", str(table)], check=True, stderr=subprocess.DEVNULL)
    return data, table


def sample_string_keys(data: Path, n: int, seed: int = 1) -> list[str]:
    """Random keys of the string table, percent-encoded as a client sends them
    (":" and "/" are in the alphabet, so most keys take the decoding path)."""
    from urllib.parse import quote

    keys = []
    with open(data, "rb") as f:
        for line in f:
            keys.append(line.split(b"\t", 1)[0].decode())
    return [quote(k, safe="") for k in random.Random(seed).sample(keys, min(n, len(keys)))]


def lua_get_with_token(keys: list[str], token: str) -> Path:
    """As lua_get, each request also carrying `Authorization: Bearer TOKEN`
    (Host first, as wrk and common clients send it)."""
    each = f"'GET /v1/keys/' .. x .. ' HTTP/1.1\\r\\nHost: ' .. wrk.host .. ':' .. wrk.port .. '\\r\\nAuthorization: Bearer {token}\\r\\n\\r\\n'"
    return lua_requests(f"get-token-{len(keys)}.lua", "keys", [f'"{k}"' for k in keys], each)


def sample_keys(data: Path, n: int, seed: int = 1) -> list[str]:
    keys = []
    with open(data, "rb") as f:
        for line in f:
            keys.append(line[:36].decode())
    return random.Random(seed).sample(keys, min(n, len(keys)))


def paired_rounds(names: list[str], rounds: int, run: Callable[[str], dict]) -> dict[str, list[dict]]:
    """`run(name)` for every contender once a round, every second round in
    reverse order (so drift over a round favours no one); each run's figures
    get its round number. Returns name -> the runs, in round order."""
    results: dict[str, list[dict]] = {name: [] for name in names}
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else list(reversed(names)):
            r = run(name)
            r["round"] = rnd + 1
            results[name].append(r)
            print(f"round {rnd + 1} {name}: {r['rps']:,} req/s, p99 {r['latency_ms']['p99']} ms, errors {r['errors']}", file=sys.stderr)
    return results


def paired_ratio(a: list[dict], b: list[dict], digits: int, field: str = "rps") -> tuple[list[float], float]:
    """The ratio a / b of `field` within each round, and the median of those
    (the headline: a round's drift cancels in its own ratio)."""
    ratios = [ra[field] / rb[field] for ra, rb in zip(a, b, strict=True)]
    return [round(r, digits) for r in ratios], round(statistics.median(ratios), digits)


# The ratios reported: name -> (numerator, denominator, decimals).
RATIOS = {
    "kv_vs_ceiling": ("kv", "ceiling", 3),
    "kv_vs_raw_protocol": ("kv", "raw_protocol", 3),
    "raw_protocol_vs_ceiling": ("raw_protocol", "ceiling", 3),
    "kv_vs_ceiling_kvworker": ("kv", "ceiling_kvworker", 3),
    "ceiling_kvworker_vs_ceiling": ("ceiling_kvworker", "ceiling", 3),
    "kv_vs_fastapi_route": ("kv", "fastapi_route", 2),
    "kv_vs_typical": ("kv", "typical", 2),
    "kv_string_vs_kv": ("kv_string", "kv", 3),
    "kv_token_vs_kv": ("kv_token", "kv", 3),
}
BENCH_TOKEN = "bench-token-0123456789abcdef"


def throughput(args, data: Path, table: Path, keys: list[str]) -> dict:
    script = lua_get(keys)
    ceiling_app = "loadtest.contenders.bare_asgi:app"
    sdata, stable = ensure_string_table(args.records)
    skeys = sample_string_keys(sdata, len(keys))
    token_file = LUA_DIR / "read-tokens"
    token_file.write_text(BENCH_TOKEN + "\n")
    token_file.chmod(0o600)
    scripts = {"kv_string": lua_get(skeys, tag="get-string"), "kv_token": lua_get_with_token(keys, BENCH_TOKEN)}
    probes = {"kv_string": f"/v1/keys/{skeys[0]}"}
    contenders = {
        "kv_string": Server("kv_string", kv_serve(stable)),
        "kv_token": Server("kv_token", kv_serve(table) + ["--read-token-file", str(token_file)]),
        "ceiling": Server("ceiling", gunicorn(ceiling_app)),
        "ceiling_kvworker": Server("ceiling_kvworker", gunicorn(ceiling_app, worker_class="kv.worker.KVWorker")),
        "kv": Server("kv", kv_serve(table)),
        "raw_protocol": Server("raw_protocol", raw_protocol(), {"KV_TABLE": str(table)}),
        "bare_lookup": Server("bare_lookup", gunicorn("loadtest.contenders.bare_lookup:app"), {"KV_TABLE": str(table)}),
        "fastapi_route": Server("fastapi_route", gunicorn("loadtest.contenders.fastapi_route:app"), {"KV_TABLE": str(table)}),
        "typical": Server("typical", typical(), {"KV_DATA": str(data)}),
    }
    if args.contenders:
        wanted = args.contenders.split(",")
        contenders = {name: srv for name, srv in contenders.items() if name in wanted}
    probe = f"/v1/keys/{keys[0]}"

    def run(name: str) -> dict:
        srv = contenders[name]
        pids = srv.pids()
        before = protocol_hits(srv.url) if name in ("kv", "kv_string") else None
        c0 = cpu_seconds(pids)
        r = wrk(srv.url, scripts.get(name, script), args.connections, args.duration)
        r["cpu_us_per_request"] = round((cpu_seconds(pids) - c0) / max(1, r["requests"]) * 1e6, 2)
        if before is not None:
            r["protocol_share"] = protocol_share(srv.url, before, r)
        check_answers(name, r)
        return r

    # Every contender runs for the whole measurement, idle but for its own
    # runs, so the runs of one round are seconds apart (the VM's speed swings
    # within a minute; a restart per run put tens of seconds between them).
    with contextlib.ExitStack() as stack:
        for name, srv in contenders.items():
            stack.enter_context(srv)
            srv.wait_ready(probes.get(name, probe) if name != "kv_token" else "/healthz")
        # Warm-ups (page cache, each worker's page tables, connections) once
        # every contender is up: a start (`typical` loads a dict of the whole
        # file) no longer overlaps a warm-up or the first round.
        for name, srv in contenders.items():
            wrk(srv.url, scripts.get(name, script), args.connections, 3)
        results = paired_rounds(list(contenders), args.rounds, run)
    rps = {name: max(r["rps"] for r in rs) for name, rs in results.items()}  # best round of each
    out = {
        "rounds": args.rounds,
        "order": "each round runs every contender once, every second round in reverse order",
        "runs": results,
        "rps": rps,
        "rps_median": {name: round(statistics.median(r["rps"] for r in rs)) for name, rs in results.items()},
        # The server's CPU (user + system, all its processes) per request: far
        # steadier than the rate on a VM whose neighbours vary.
        "cpu_us_per_request_median": {name: statistics.median(r["cpu_us_per_request"] for r in rs) for name, rs in results.items()},
        "paired_ratios": {},
    }
    for key, (a, b, digits) in RATIOS.items():
        if a not in results or b not in results:
            continue
        paired, out[key] = paired_ratio(results[a], results[b], digits)
        out["paired_ratios"][key] = paired
        out[f"{key}_best"] = round(rps[a] / rps[b], digits)
        print(
            f"{a} / {b}: median of paired rounds {out[key]} (rounds {', '.join(map(str, paired))}), best / best {out[f'{key}_best']}",
            file=sys.stderr,
        )
    return out


def paced(
    url: str,
    keys: list[str],
    target_rps: float,
    connections: int,
    duration: float,
    tolerance: float = 0.05,
    probe_s: float = 3,
    max_probes: int = 8,
) -> dict:
    """A wrk run at `target_rps`. wrk (4.x; wrk2's -R is not packaged) cannot
    pace by rate, only by a delay before each request on each connection, and
    the rate that delay gives depends on the latency. So: start from the delay
    that would give the target with zero latency, run `probe_s`-second probes
    scaling the delay by achieved / target until a probe lands within
    `tolerance` of the target, then make the measured run with that delay."""
    delay_ms = connections / target_rps * 1000
    probes = []
    for _ in range(max_probes):
        r = wrk(url, lua_get(keys, delay_ms), connections, probe_s)
        probes.append({"delay_ms": round(delay_ms, 3), "rps": r["rps"], "achieved_vs_target": round(r["rps"] / target_rps, 3)})
        print(
            f"half peak calibration: delay {delay_ms:.3f} ms -> {r['rps']:,} req/s ({r['rps'] / target_rps:.3f} of target)", file=sys.stderr
        )
        if abs(r["rps"] / target_rps - 1) <= tolerance:
            break
        delay_ms = delay_ms * r["rps"] / target_rps
    r = wrk(url, lua_get(keys, delay_ms), connections, duration)
    r["delay_ms"] = round(delay_ms, 3)
    r["target_rps"] = round(target_rps)
    r["achieved_vs_target"] = round(r["rps"] / target_rps, 3)
    r["calibration"] = probes
    return r


def latency(args, table: Path, keys: list[str], peak_rps: int | None) -> dict:
    """kv's latency at concurrency 1, at half its peak rate, at its peak, and
    with batches. Half peak is 50% of `peak_rps` (kv's median rate in the
    throughput rounds), or of this section's own peak run without one."""
    out = {}
    with Server("kv", kv_serve(table)) as srv:
        srv.wait_ready(f"/v1/keys/{keys[0]}")
        wrk(srv.url, lua_get(keys), 16, 2)
        before = protocol_hits(srv.url)
        out["concurrency_1"] = wrk(srv.url, lua_get(keys), 1, args.duration)
        out["concurrency_1"]["protocol_share"] = protocol_share(srv.url, before, out["concurrency_1"])
        before = protocol_hits(srv.url)
        peak = wrk(srv.url, lua_get(keys), args.connections, args.duration)
        peak["protocol_share"] = protocol_share(srv.url, before, peak)  # the half peak run sends the same requests
        source = "throughput: kv median req/s over the rounds" if peak_rps else "latency: this section's peak run"
        peak_rps = peak_rps or peak["rps"]
        r = paced(srv.url, keys, 0.5 * peak_rps, args.connections, args.duration)
        r["peak_rps"], r["peak_source"] = peak_rps, source
        out["half_peak"] = r
        out["peak"] = peak
        size = 100
        b = wrk(srv.url, lua_batch(keys, size), 16, args.duration)
        b["keys_per_s"] = b["rps"] * size
        b["batch_size"] = size
        out["batch"] = b
    for k, v in out.items():
        print(f"latency {k}: {v['rps']:,} req/s, p50 {v['latency_ms']['p50']} ms, p99 {v['latency_ms']['p99']} ms", file=sys.stderr)
    h = out["half_peak"]
    print(
        f"half peak: target {h['target_rps']:,} req/s (50% of {h['peak_rps']:,}), achieved {h['rps']:,} "
        f"({h['achieved_vs_target']} of target), {h['connections']} connections, delay {h['delay_ms']} ms, "
        f"{len(h['calibration'])} calibration runs",
        file=sys.stderr,
    )
    if abs(h["achieved_vs_target"] - 1) > 0.05:
        print("half peak: WARNING the measured run is more than 5% off its target", file=sys.stderr)
    return out


def memory(args, data: Path, table: Path, keys: list[str]) -> dict:
    """Total PSS (master + workers) after 200k random lookups."""
    script = lua_get(keys)
    out = {"kv": {}, "typical": {}}
    for workers in (1, 2, 4):
        for name, srv in (
            ("kv", Server("kv", kv_serve(table, workers))),
            ("typical", Server("typical", typical(workers), {"KV_DATA": str(data)})),
        ):
            with srv:
                srv.wait_ready(f"/v1/keys/{keys[0]}")
                done = 0
                while done < 200_000:
                    done += wrk(srv.url, script, 32, 3)["requests"]
                out[name][workers] = {"pss_kib": srv.pss_kib(), "lookups": done, "processes": len(srv.pids())}
                print(f"memory {name} {workers} workers: {out[name][workers]['pss_kib'] / 1024:.0f} MiB PSS", file=sys.stderr)
    return out


def _summary_ms(samples: list[float]) -> dict:
    xs = sorted(samples)
    q = lambda f: round(xs[min(len(xs) - 1, int(f * len(xs)))] * 1000, 3)  # noqa: E731
    return {"n": len(xs), "mean": round(sum(xs) / len(xs) * 1000, 3), "p50": q(0.50), "p99": q(0.99), "max": round(xs[-1] * 1000, 3)}


def _curl_times(url: str, keys: list[str], n: int) -> list[float]:
    """Client-side seconds per request as curl reports them (time_total: connect,
    send, wait, receive; a new connection each time, as a shell user gets)."""
    out = []
    for k in keys[:n]:
        p = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", f"{url}/v1/keys/{k}"], capture_output=True, text=True, check=True
        )
        out.append(float(p.stdout))
    return out


def _python_client_times(url: str, keys: list[str], n: int) -> list[float]:
    """Seconds per kv.Client.get, timed around the call (keep-alive connection)."""
    sys.path.insert(0, str(ROOT))
    from kv.client import Client

    out = []
    with Client(url) as c:
        c.get(keys[0])
        for k in keys[:n]:
            t0 = time.perf_counter()
            c.get(k)
            out.append(time.perf_counter() - t0)
    return out


def clients(args, table: Path, keys: list[str]) -> dict:
    """Client-side latency of curl, the Python client and wrk, on an idle server
    and while wrk holds it at its peak rate; plus wrk at concurrency 1 against
    the ceiling and the bare lookup, to split where the time goes."""
    out: dict = {"idle": {}, "loaded": {}, "concurrency_1": {}}
    rnd = random.Random(5)
    with Server("kv", kv_serve(table)) as srv:
        srv.wait_ready(f"/v1/keys/{keys[0]}")
        wrk(srv.url, lua_get(keys), 16, 2)
        out["idle"]["curl"] = _summary_ms(_curl_times(srv.url, rnd.sample(keys, 300), 300))
        out["idle"]["python_client"] = _summary_ms(_python_client_times(srv.url, rnd.sample(keys, 5000), 5000))
        w = wrk(srv.url, lua_get(keys), 1, min(args.duration, 5))
        out["idle"]["wrk"] = {
            "mean": w["latency_ms"]["mean"],
            "p50": w["latency_ms"]["p50"],
            "p99": w["latency_ms"]["p99"],
            "rps": w["rps"],
        }
        # Loaded: wrk at peak (64 connections) in the background for the whole measurement.
        bg = subprocess.Popen(
            ["wrk", "-t", "1", "-c", str(args.connections), "-d", "30s", "--timeout", "5s", "-s", str(lua_get(keys)), srv.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1.0)
            out["loaded"]["curl"] = _summary_ms(_curl_times(srv.url, rnd.sample(keys, 200), 200))
            out["loaded"]["python_client"] = _summary_ms(_python_client_times(srv.url, rnd.sample(keys, 2000), 2000))
        finally:
            stdout, _ = bg.communicate(timeout=60)
        m = re.search(r"WRKJSON (\{.*\})", stdout)
        if m:
            r = json.loads(m.group(1))
            out["loaded"]["wrk"] = {
                "mean": round(r["lat_mean_us"] / 1000, 3),
                "p50": r["p50_us"] / 1000,
                "p99": r["p99_us"] / 1000,
                "rps": round(r["requests"] / (r["duration_us"] / 1e6)),
                "connections": args.connections,
            }
    for name, srv in (
        ("ceiling", Server("ceiling", gunicorn("loadtest.contenders.bare_asgi:app"))),
        ("bare_lookup", Server("bare_lookup", gunicorn("loadtest.contenders.bare_lookup:app"), {"KV_TABLE": str(table)})),
        ("kv", Server("kv", kv_serve(table))),
    ):
        with srv:
            srv.wait_ready(f"/v1/keys/{keys[0]}")
            wrk(srv.url, lua_get(keys), 4, 2)
            w = wrk(srv.url, lua_get(keys), 1, min(args.duration, 5))
            out["concurrency_1"][name] = {
                "mean": w["latency_ms"]["mean"],
                "p50": w["latency_ms"]["p50"],
                "p99": w["latency_ms"]["p99"],
                "rps": w["rps"],
            }
    for state in ("idle", "loaded"):
        for name, v in out[state].items():
            print(f"clients {state} {name}: mean {v['mean']} ms, p50 {v['p50']} ms, p99 {v['p99']} ms", file=sys.stderr)
    for name, v in out["concurrency_1"].items():
        print(f"clients c1 {name}: mean {v['mean']} ms", file=sys.stderr)
    return out


def _smaps(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0])
    return out


def memory_by_size(args, sizes: list[int]) -> dict:
    """Per-worker memory of `kv serve` (2 workers) at each table size after
    random lookups for a few seconds: Rss (includes mapped table pages, shared),
    Pss (the worker's fair share), Private_Dirty (memory that is the worker's
    alone; what each added worker costs)."""
    out = {}
    for n in sizes:
        data, table = ensure_table(n)
        keys = sample_keys(data, 100_000) if n <= 10_000_000 else _head_keys(data, 100_000)
        with Server("kv", kv_serve(table)) as srv:
            srv.wait_ready(f"/v1/keys/{keys[0]}")
            r = wrk(srv.url, lua_get(keys), 32, 5)
            workers = [p for p in srv.pids() if p != srv.proc.pid]
            per = [_smaps(p) for p in workers]
            out[n] = {
                "table_bytes": table.stat().st_size,
                "lookups": r["requests"],
                "rps": r["rps"],
                "workers": len(workers),
                "per_worker_kib": {
                    k: round(sum(m[k] for m in per) / len(per)) for k in ("Rss", "Pss", "Private_Dirty", "Shared_Clean", "Private_Clean")
                },
                "master_pss_kib": _smaps(srv.proc.pid)["Pss"],
            }
        w = out[n]["per_worker_kib"]
        print(
            f"memory {n:,}: per worker Rss {w['Rss'] / 1024:.0f} MiB, Pss {w['Pss'] / 1024:.0f} MiB, "
            f"Private_Dirty {w['Private_Dirty'] / 1024:.0f} MiB",
            file=sys.stderr,
        )
    return out


def _first_key(data: Path) -> str:
    """The first record's key (reading one line, not sampling a 10M-line file)."""
    with open(data, "rb") as f:
        return f.readline()[:36].decode()


def _head_keys(data: Path, n: int) -> list[str]:
    """Keys spread over a file too big to read whole: n lines at evenly spaced offsets."""
    size = data.stat().st_size
    keys = []
    with open(data, "rb") as f:
        for i in range(n):
            f.seek(size * i // n)
            f.readline()
            line = f.readline()
            if len(line) > 37:
                keys.append(line[:36].decode())
    return keys


def startup(args, sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        data, table = ensure_table(n)
        key = sample_keys(data, 1)[0] if n <= 1_000_000 else _first_key(data)
        times = []
        for _ in range(3):
            with Server("kv", kv_serve(table)) as srv:
                times.append(srv.wait_ready(f"/v1/keys/{key}"))
        out[n] = {"first_200_s": round(min(times), 3), "runs": [round(t, 3) for t in times], "table_bytes": table.stat().st_size}
        print(f"startup {n:,}: {min(times):.3f} s to first 200", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=3, help="seconds of each wrk run (default 3: many short rounds, see --rounds)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--rounds", type=int, default=12, help="throughput rounds over all contenders (ratios: median of the per-round ratios; default 12)"
    )
    ap.add_argument("--contenders", default="", help="comma-separated throughput contenders to run (default: all)")
    ap.add_argument("--startup-sizes", default="10000,10000000")
    ap.add_argument(
        "--memory-sizes",
        default="10000,1000000,10000000,100000000",
        help="table sizes for per-worker memory (bench-data/N.data is generated when missing)",
    )
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,latency,clients,memory,memory_by_size,startup")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "http.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    data, table = ensure_table(args.records)
    keys = sample_keys(data, 100_000)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "records": args.records,
        "wrk": f"wrk -t1 -c{args.connections} -d{max(1, round(args.duration))}s, random existing keys from a preloaded array",
    }
    out = Path(args.out)
    if out.exists():  # keep parts not rerun
        old = json.loads(out.read_text())
        result = {**old, **result}
    if "throughput" not in skip:
        result["throughput"] = throughput(args, data, table, keys)
    if "latency" not in skip:
        peak = None if "throughput" in skip else result["throughput"]["rps_median"]["kv"]
        result["latency"] = latency(args, table, keys, peak)
    if "clients" not in skip:
        result["clients"] = clients(args, table, keys)
    if "memory" not in skip:
        result["memory"] = memory(args, data, table, keys)
    if "memory_by_size" not in skip:
        result["memory_by_size"] = memory_by_size(args, [int(s) for s in args.memory_sizes.split(",")])
    if "startup" not in skip:
        result["startup"] = startup(args, [int(s) for s in args.startup_sizes.split(",")])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    shutil.rmtree(LUA_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
