"""Issue 15: probes an attacker would try, against the real server (127.0.0.1).
Each asserts a 4xx or a closed connection, never a 5xx, a hang or a worker
crash; the module ends by checking the workers' memory and descriptors are
back to what they were. The slow ones are drills (`-m drill`)."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest
from serverutil import running_server, worker_pids

KEEPALIVE = 2  # seconds: the slowloris and idle probes wait a few of these


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, "--keepalive", str(KEEPALIVE), workers=2) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        pids = worker_pids(proc.pid)
        for _ in range(50):  # warm: the baseline is a worker that has served
            httpx.get(f"{url}/v1/keys/{records[0][0]}")
        baseline = {p: (rss_kb(p), fds(p)) for p in pids}
        yield {"url": url, "port": port, "proc": proc, "records": records, "pids": pids}
        # After every probe: the same workers, memory and descriptors back to normal.
        time.sleep(2 * KEEPALIVE + 1)
        assert worker_pids(proc.pid) == pids, "a worker died during the probes"
        for p, (kb, n) in baseline.items():
            assert rss_kb(p) - kb < 30_000, f"worker {p} grew from {kb} kB to {rss_kb(p)} kB"
            assert fds(p) <= n + 5, f"worker {p} holds {fds(p)} descriptors, {n} before"


def exchange(port: int, payload: bytes, timeout: float = 10.0, half_close: bool = True) -> bytes:
    """Send `payload`, read until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # reset or broken pipe: the server refused before reading it all
            pass
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return out


def statuses(response: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", response)]


def refused(server, response: bytes) -> list[int]:
    """The rule for a hostile request: 4xx answers or none (closed), never 5xx; the workers live."""
    codes = statuses(response)
    assert all(400 <= c < 500 for c in codes), codes
    assert worker_pids(server["proc"].pid) == server["pids"], "a worker crashed"
    return codes


def head(path: bytes = b"/healthz", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


# -- request smuggling ----------------------------------------------------------------------

SMUGGLING = {
    "cl_te": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te_cl": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "two_content_lengths": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
    "bad_chunk_size": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "huge_chunk_size": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{}\r\n",
    "obs_fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    "te_obfuscated": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n{}",
    "space_before_colon": b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{}",
}


@pytest.mark.parametrize("name", SMUGGLING)
def test_smuggling_variants_are_refused_and_smuggle_nothing(server, name):
    out = exchange(server["port"], SMUGGLING[name] + head(b"/v1/keys/smuggled"))
    # One 400 and the connection closed: the request after it is never parsed (httptools/llhttp is strict).
    assert refused(server, out) == [400], out[:300]


# -- oversized heads ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
def test_a_huge_header_line_is_431_and_closed(server, size):
    out = exchange(server["port"], b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * size + b"\r\n\r\n")
    assert refused(server, out) == [431]


def test_ten_thousand_headers_are_431_and_closed(server):
    out = exchange(server["port"], head(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))))
    assert refused(server, out) == [431]


def test_a_1_mib_url_is_414_and_closed(server):
    out = exchange(server["port"], b"GET /v1/keys/" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused(server, out) == [414]


# -- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/keys/%00",
        b"/v1/keys/a%00b",
        b"/v1/keys/..%2f..%2fetc%2fpasswd",
        b"/v1/keys/..%2fstats",
        b"/..%2f..%2fetc/passwd",
        b"/docs/..%2f..%2fetc%2fpasswd",
        b"/static/..%2f..%2f..%2fetc%2fpasswd",
        b"/v1/keys/%ff%fe",
    ],
)
def test_nul_and_dot_dot_in_paths_are_4xx(server, path):
    out = exchange(server["port"], head(path))
    assert refused(server, out) and b"root:" not in out


def test_a_raw_nul_in_the_request_line_is_refused(server):
    assert refused(server, exchange(server["port"], b"GET /v1/keys/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n")) in ([400], [])


def test_an_http2_preface_is_refused(server):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"
    assert refused(server, exchange(server["port"], preface)) in ([400], [])


# -- pipelining, Expect, bodies -------------------------------------------------------------


def test_100_pipelined_requests_mixing_routes_are_answered_in_order(server):
    k, v = server["records"][0]
    routes = [b"/v1/keys/" + k.encode(), b"/healthz", b"/v1/keys/not-a-key", b"/readyz", b"/nope", b"/v1/stats"]
    expected = [200, 200, 400, 200, 404, 200]
    payload = b"".join(head(routes[i % len(routes)]) for i in range(99))
    batch = json.dumps({"keys": [k]}).encode()
    payload += b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(batch) + batch
    out = exchange(server["port"], payload, half_close=False, timeout=5)
    codes = statuses(out)
    assert codes == [expected[i % len(routes)] for i in range(99)] + [200]


def test_expect_100_continue_with_a_small_body_is_answered(server):
    k = server["records"][0][0]
    body = json.dumps({"keys": [k]}).encode()
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=5) as s:
        s.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 100")
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_10_mb_body_is_413_and_closed(server):
    out = exchange(
        server["port"],
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n" + b"x" * (1 << 20),
    )
    assert refused(server, out) == [413] and b"connection: close" in out.lower()


def test_a_10_mb_chunked_body_is_413(server):
    chunk = b"%x\r\n" % 65536 + b"[" * 65536 + b"\r\n"
    out = exchange(
        server["port"],
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 160 + b"0\r\n\r\n",
    )
    assert refused(server, out)[:1] == [413]


def test_deeply_nested_json_is_400_not_500(server):
    body = b"[" * 50_000 + b"]" * 50_000
    r = httpx.post(f"{server['url']}/v1/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413)
    body = b'{"keys": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = httpx.post(f"{server['url']}/v1/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    refused(server, b"")


@pytest.mark.drill
def test_a_body_that_stops_short_or_trickles_is_408_within_the_body_limit(server):
    payload = b'POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"keys":'
    t0 = time.monotonic()
    out = exchange(server["port"], payload, half_close=False, timeout=20)
    assert refused(server, out) == [408] and time.monotonic() - t0 < 15
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=20) as s:
        s.sendall(payload)
        t0, out = time.monotonic(), b""
        s.settimeout(0.5)
        while time.monotonic() - t0 < 15:
            try:
                s.sendall(b" ")
                out += s.recv(4096)
                if out:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert refused(server, out) in ([408], [])


# -- many connections ----------------------------------------------------------------------


@pytest.mark.drill
def test_2000_idle_connections_leave_normal_clients_answered(server):
    records = server["records"]
    idle = [socket.create_connection(("127.0.0.1", server["port"]), timeout=5) for _ in range(2000)]
    try:
        latencies = []
        with httpx.Client(base_url=server["url"], timeout=5) as c:
            for k, v in records[:1000]:
                t0 = time.perf_counter()
                r = c.get(f"/v1/keys/{k}")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.content == v
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        print(f"p99 with 2,000 idle connections: {p99:.2f} ms")
        time.sleep(KEEPALIVE + 1.5)
        closed = 0
        for s in idle:
            s.settimeout(0.2)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except TimeoutError:
                pass
    finally:
        for s in idle:
            s.close()
    assert p99 < 100, f"p99 {p99:.1f} ms"
    assert closed == 2000, f"{closed} of 2,000 idle connections closed by the server"


@pytest.mark.drill
def test_slowloris_on_500_connections_is_cut_and_normal_clients_answered(server):
    k, v = server["records"][0]
    conns = [socket.create_connection(("127.0.0.1", server["port"]), timeout=5) for _ in range(500)]
    try:
        for s in conns:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0, cut = time.monotonic(), set()
        while time.monotonic() - t0 < 3 * KEEPALIVE + 2 and len(cut) < len(conns):
            for i, s in enumerate(conns):
                if i in cut:
                    continue
                try:
                    s.sendall(b"X-a: b\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    cut.add(i)
            assert httpx.get(f"{server['url']}/v1/keys/{k}", timeout=5).content == v
            time.sleep(0.5)
        for i, s in enumerate(conns):  # a closed one may still take a write or two: read to know
            if i not in cut:
                s.settimeout(0.2)
                try:
                    if s.recv(1) == b"":
                        cut.add(i)
                except (ConnectionResetError, BrokenPipeError):
                    cut.add(i)
                except TimeoutError:
                    pass
    finally:
        for s in conns:
            s.close()
    assert len(cut) == 500, f"{len(cut)} of 500 slowloris connections cut within {3 * KEEPALIVE + 2} s"
