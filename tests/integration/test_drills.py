"""Failure drills against the real server, each bounded in time and traffic
(127.0.0.1 only). Results land in loadtest/results/drills.json for the docs."""

import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from serverutil import running_server, worker_pids

pytestmark = pytest.mark.drill
RESULTS = ROOT / "loadtest" / "results" / "drills.json"


def record(name: str, result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = result | {"at": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, workers=2) as (url, proc):
        yield url, proc, records


def test_sigkill_a_worker_under_load(server):
    url, proc, records = server
    stop = threading.Event()
    lock = threading.Lock()
    events = []  # (time, ok)

    def load():
        rnd = random.Random()
        with httpx.Client(base_url=url, timeout=5) as c:  # keep-alive, no retries: raw failures count
            while not stop.is_set():
                k, v = rnd.choice(records)
                try:
                    r = c.get(f"/v1/keys/{k}")
                    ok = r.status_code == 200 and r.content == v
                except httpx.HTTPError:
                    ok = False
                with lock:
                    events.append((time.monotonic(), ok))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        victim = worker_pids(proc.pid)[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replaced = None
        while time.monotonic() - killed < 15:
            pids = worker_pids(proc.pid)
            if len(pids) == 2 and victim not in pids:
                replaced = time.monotonic()
                break
            time.sleep(0.01)
        assert replaced, "worker not replaced within 15 s"
        # Recovered when the new worker has booted and answers.
        while httpx.get(f"{url}/readyz").status_code != 200:
            time.sleep(0.01)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [t for t, ok in events if not ok]
    after = [t for t, ok in events if t > replaced + 1.0]
    record(
        "sigkill_worker",
        {
            "requests": len(events),
            "failed": len(failed),
            "replaced_after_s": round(replaced - killed, 3),
            "requests_after_recovery": len(after),
            "clients": 8,
        },
    )
    assert len(failed) <= 8, f"{len(failed)} failures: more than the requests in flight on the killed worker"
    assert all(t < replaced + 1.0 for t in failed), "failures after the worker was replaced"


def test_slow_idle_clients_do_not_hurt_normal_traffic(server):
    url, _, records = server
    port = int(url.rsplit(":", 1)[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"open file limit {hard} is below what 1,000 idle connections need")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.append(s)
        opened = time.monotonic()
        latencies = []
        with httpx.Client(base_url=url, timeout=5) as c:
            for k, v in random.Random(1).sample(records, 2000):
                t0 = time.perf_counter()
                r = c.get(f"/v1/keys/{k}")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.content == v
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        # Idle connections are closed by the server after its keep-alive timeout (5 s).
        time.sleep(max(0.0, opened + 7.0 - time.monotonic()))
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except TimeoutError:
                pass
    finally:
        for s in idle:
            s.close()
    record("idle_connections", {"idle": 1000, "requests": 2000, "p99_ms": round(p99, 2), "idle_closed_by_server": closed})
    assert p99 < 50, f"p99 {p99:.1f} ms with 1,000 idle connections"
    assert closed == 1000, f"only {closed} of 1,000 idle connections were closed"


def raw_http(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send `payload` and read the answer. A long payload goes in two parts,
    reading in between, as a client that watches for an early refusal does
    (curl with `Expect`): a server that refuses a body from its head (413)
    answers and closes after reading at most 1 MiB more, and a client still
    writing megabytes after that gets a reset that may discard the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        first, rest = payload[:65536], payload[65536:]
        s.sendall(first)
        if rest:
            s.settimeout(0.5)
            try:
                early = s.recv(65536)
            except TimeoutError:
                early = b""
            s.settimeout(timeout)
            if early:
                return early
            try:
                s.sendall(rest)
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else 0


def test_hostile_requests_get_4xx_never_500(server):
    url, _, records = server
    port = int(url.rsplit(":", 1)[1])
    key = records[0][0]
    many = json.dumps({"keys": [str(uuid.uuid4()) for _ in range(100_000)]}).encode()
    cases = {
        "url_100k": b"GET /v1/keys/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "headers_100k": b"GET /v1/keys/" + key.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n",
        "many_headers": b"GET /v1/keys/"
        + key.encode()
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        + b"\r\n",
        "body_10m": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
        + b"x" * 65536,
        "batch_100k_keys": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(many)
        + many,
        "invalid_json": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{not json",
        "cl_and_te": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/keys/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "two_content_lengths": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n{}{}",
        "bad_method": b"BREW /v1/keys/" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "non_ascii_path": "GET /v1/keys/\u00e9\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200),
    }
    statuses = {}
    for name, payload in cases.items():
        statuses[name] = status_of(raw_http(port, payload))
    record("hostile_requests", statuses)
    for name, st in statuses.items():
        assert 400 <= st < 500, f"{name}: status {st}"
    with httpx.Client(base_url=url) as c:  # the server is unaffected
        assert c.get(f"/v1/keys/{key}").content == records[0][1]
        stats = c.get("/v1/stats").json()
    assert not any(s.startswith("5") for s in stats["by_status"]), stats["by_status"]


def test_schemathesis_finds_no_5xx_and_no_schema_violation(server):
    url, _, _ = server
    st = Path(sys.executable).parent / "schemathesis"
    r = subprocess.run(
        [
            str(st),
            "run",
            f"{url}/openapi.json",
            "-n",
            "450",
            "--seed",
            "7",
            "--no-color",
            "-c",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(r"(\d+) generated, (\d+) passed", r.stdout)
    record(
        "schemathesis",
        {
            "generated": int(m.group(1)) if m else None,
            "returncode": r.returncode,
            "summary": r.stdout.strip().splitlines()[-1] if r.stdout else r.stderr[-300:],
        },
    )
    assert r.returncode == 0, r.stdout[-4000:]
    assert m and int(m.group(1)) >= 1000 and m.group(1) == m.group(2), r.stdout[-2000:]
