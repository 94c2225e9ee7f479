"""kv/worker.py's connection rules, on a real server over raw sockets:
silent and slow clients are closed after the keep-alive timeout, a complete
request split across packets is still served, and a reload answers the next
request on an old keep-alive connection with `Connection: close` instead of
resetting it.

Every request here is a plain hit (Host first, nothing in flight), so these
rules are tested on the path that answers it in the protocol (kv/worker.py
rule 8, kv/http/protocol.py); tests/test_protocol.py checks that path is taken."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serverutil import running_server, worker_pids


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, "--keepalive", "1", workers=1) as (url, proc):
        yield int(url.rsplit(":", 1)[1]), records


def request(key: str) -> bytes:
    return f"GET /v1/keys/{key} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a response; got {buf!r}"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(re.match(r"HTTP/1\.1 (\d{3})", lines[0]).group(1))
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += s.recv(65536)
    return status, headers, body


def closed_after(s: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes `s` (EOF or reset), or None within `limit`."""
    t0 = time.monotonic()
    s.settimeout(limit)
    try:
        data = s.recv(1)
    except ConnectionResetError:
        return time.monotonic() - t0
    except TimeoutError:
        return None
    assert data == b"", f"unexpected data {data!r}"
    return time.monotonic() - t0


def test_a_silent_connection_is_closed_after_the_keepalive_timeout(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        waited = closed_after(s, 5)
    assert waited is not None, "a connection that never sent a request stayed open 5 s (keepalive is 1 s)"
    assert 0.5 < waited < 3


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server):
    port, records = server
    payload = request(records[0][0])
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.monotonic()
        sent = 0
        try:
            for byte in payload[:-2]:  # never complete
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(3)
        try:
            rest = s.recv(1)
        except ConnectionResetError:
            rest = b""
        elapsed = time.monotonic() - t0
    assert rest == b"", "the server answered an incomplete request head"
    assert sent < len(payload) - 2 or elapsed < 3, "the dripping client was never cut off"
    assert elapsed < 4


def test_a_request_head_split_across_packets_is_served(server):
    port, records = server
    key, value = records[1]
    payload = request(key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload[:10])
        time.sleep(0.3)
        s.sendall(payload[10:])
        status, _, body = read_response(s)
    assert (status, body) == (200, value)


def test_keepalive_connections_survive_between_requests_within_the_timeout(server):
    port, records = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for key, value in records[2:5]:
            s.sendall(request(key))
            status, headers, body = read_response(s)
            assert (status, body) == (200, value)
            assert headers.get("connection") != "close"
            time.sleep(0.4)


def test_reload_answers_an_old_keepalive_connection_with_connection_close(gen_table):
    table, records = gen_table
    (k1, _), (k2, v2) = records[10], records[11]
    with running_server(table, "--keepalive", "5", workers=1) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request(k1))
            assert read_response(s)[0] == 200
            (old,) = worker_pids(proc.pid)
            proc.send_signal(signal.SIGHUP)
            # The old worker is told to stop once the new one accepts (kv/serve.py, KVArbiter):
            # wait until the new one answers a fresh connection.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v1/stats", timeout=2).json()["worker"] != old:
                        break
                time.sleep(0.05)
            time.sleep(0.5)  # the old worker has been told to stop and is draining
            assert old in worker_pids(proc.pid), "the old worker exited with a keep-alive connection open"
            s.sendall(request(k2))  # on the old worker's connection
            status, headers, body = read_response(s)
            assert (status, body) == (200, v2)
            assert headers.get("connection") == "close"
            assert closed_after(s, 3) is not None, "the drained connection was not closed after its response"
        deadline = time.monotonic() + 5
        while old in worker_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old not in worker_pids(proc.pid), "the old worker did not exit once its connection closed"


def test_default_worker_count_follows_the_cpus_this_process_may_use():
    """In a container or under taskset, the host's core count is not ours to use."""
    code = "import os; os.sched_setaffinity(0, {0}); from kv.gunicorn_conf import available_cpus; print(available_cpus())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "KV_WORKERS"},
    )
    assert out.stdout.strip() == "1"
    code = "import os; os.sched_setaffinity(0, {0}); import kv.gunicorn_conf as g; print(g.workers)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "KV_WORKERS"},
    )
    assert out.stdout.strip() == "1"
