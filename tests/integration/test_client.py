"""kv.Client and `kv get` against tiny in-test servers: one that never answers,
one that records every request it gets, and httpx mock transports."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from serverutil import KV

from kv.client import Client, ServerError, ServerUnreachable

K1, K2, K3 = (str(uuid.UUID(int=i, version=4)) for i in (1, 2, 3))


@contextlib.contextmanager
def silent_server():
    """Accepts TCP connections on 127.0.0.1 and never answers; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held, done = [], threading.Event()

    def accept():
        while not done.is_set():
            with contextlib.suppress(OSError):  # socket.timeout included
                held.append(listener.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        t.join()
        for conn in held:
            conn.close()
        listener.close()


@contextlib.contextmanager
def recording_server(answer):
    """An HTTP/1.1 keep-alive server on 127.0.0.1 that records (method, path,
    client port) of every request and answers `answer(method, path, body)` ->
    (status, JSON payload). Yields (url, records)."""
    seen: list[tuple[str, str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self._answer(b"")

        def do_POST(self):
            self._answer(self.rfile.read(int(self.headers.get("content-length", 0))))

        def _answer(self, body: bytes):
            seen.append((self.command, self.path, self.client_address[1]))
            status, payload = answer(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def batch_answer(method: str, path: str, body: bytes):
    """A single kv server's batch: every key present, its value = its first 8 characters."""
    if (method, path) != ("POST", "/v1/batch"):
        return 404, {"detail": f"no {method} {path} here"}
    keys = json.loads(body)["keys"]
    return 200, {"generation": "g", "values": {k: k[:8] for k in keys}, "missing": []}


def mock_client(handler) -> Client:
    c = Client("http://kv.invalid")
    c.http = httpx.Client(base_url=c.url, transport=httpx.MockTransport(handler))
    return c


# A server that accepts but never answers


def test_client_raises_server_unreachable_when_the_server_never_answers():
    with silent_server() as url, Client(url, timeout=0.3) as c:
        for call in (lambda: c.get(K1), lambda: c.get_many([K1, K2]), c.stats):
            t0 = time.monotonic()
            with pytest.raises(ServerUnreachable, match=rf"no answer from kv server at {url} within 0.3 s \(ReadTimeout\)"):
                call()
            assert time.monotonic() - t0 < 2  # not retried: one timeout, not two


@pytest.mark.parametrize("argv", [["get", K1], ["get", K1, K2], ["stats"]])
def test_cli_exits_3_when_the_server_never_answers(argv):
    with silent_server() as url:
        t0 = time.monotonic()
        r = subprocess.run([KV, *argv, "--url", url, "--timeout", "0.5"], capture_output=True, timeout=30)
        assert r.returncode == 3, r.stderr
        assert f"no answer from kv server at {url} within 0.5 s".encode() in r.stderr
        assert b"Traceback" not in r.stderr
        assert time.monotonic() - t0 < 10


def test_cli_takes_the_timeout_from_kv_timeout():
    with silent_server() as url:
        env = dict(os.environ, KV_URL=url, KV_TIMEOUT="0.4")
        r = subprocess.run([KV, "get", K1], env=env, capture_output=True, timeout=30)
    assert r.returncode == 3 and b"within 0.4 s" in r.stderr


@pytest.mark.parametrize("option", [["--timeout", "0"], ["--timeout", "soon"], ["--url", "127.0.0.1:8000"]])
def test_cli_refuses_a_bad_timeout_or_url_with_exit_2(option):
    r = subprocess.run([KV, "get", K1, *option], capture_output=True, timeout=30)
    assert r.returncode == 2 and option[1].encode() in r.stderr


def test_client_refuses_a_bad_kv_timeout(monkeypatch):
    monkeypatch.setenv("KV_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="KV_TIMEOUT must be a positive number of seconds, not '-1'"):
        Client()


# Requests made


def test_cli_get_many_keys_is_exactly_one_request():
    with recording_server(batch_answer) as (url, seen):
        r = subprocess.run([KV, "get", K1, K2, "--url", url], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{K1}\t{K1[:8]}".encode(), f"{K2}\t{K2[:8]}".encode()]
    assert [(m, p) for m, p, _ in seen] == [("POST", "/v1/batch")]


def test_client_reuses_one_keep_alive_connection():
    with recording_server(batch_answer) as (url, seen), Client(url) as c:
        for _ in range(3):
            assert c.get_many([K1, K2, K3]) == {k: k[:8].encode() for k in (K1, K2, K3)}
        assert c.get_many([]) == {}  # nothing to ask: no request
    assert len(seen) == 3 and len({port for _, _, port in seen}) == 1
    assert c.http._transport._pool._max_keepalive_connections == 1


def test_a_413_without_a_limit_halves_the_batch():
    """A proxy's body-size 413 names no limit: halve until it passes."""
    sizes = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys = json.loads(request.content)["keys"]
        sizes.append(len(keys))
        if len(keys) > 3:
            return httpx.Response(413, text="<html>413 Request Entity Too Large</html>")
        return httpx.Response(200, json={"values": dict.fromkeys(keys, "v"), "missing": []})

    keys = [str(uuid.UUID(int=i, version=4)) for i in range(10)]
    with mock_client(handler) as c:
        assert c.get_many(keys) == dict.fromkeys(keys, b"v")
        assert sizes == [10, 5, 2, 2, 2, 2, 2] and c.batch_limit == 2


def test_a_413_for_a_single_key_is_a_server_error():
    with mock_client(lambda request: httpx.Response(413, json={"detail": "too large", "limit": 1})) as c:
        with pytest.raises(ServerError, match="413: too large"):
            c.get_many([K1])


def test_a_421_from_a_lone_shard_server_says_to_use_the_front():
    """Pointed at one shard's server, not the front: its batch answers 421
    and it has no shard map (404), so there is nothing to split by."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/shards":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(421, json={"detail": "1 key(s) belong to other shards; this server holds shard 0 of 2"})

    with mock_client(handler) as c, pytest.raises(ServerError, match="shard 0 of 2; .* use the URL of the front") as e:
        c.get_many([K1, K2])
    assert e.value.status == 421
