"""Plain hits answered in the protocol (kv/http/protocol.py, kv/worker.py
rule 8), on a real server over raw sockets: the same bytes as the ASGI path
(a hit pipelined behind a request in flight takes the ASGI path: the
reference), pipelined requests answered in order, keep-alive and close
rules, the head limit, and every hit counted."""

from __future__ import annotations

import random
import re
import socket
import time
import uuid

import httpx
import pytest
from conftest import write_records
from reference_writer import reference_table
from serverutil import running_server

from kv.build import build_table

MIB = 1 << 20
rnd = random.Random(16)
UUID_RECORDS = [
    (str(uuid.UUID(int=rnd.getrandbits(128), version=4)), v)
    for v in (
        b"plain ascii",
        "\u00e9t\u00e9 \U0001f511 utf-8".encode(),
        b"\xff\x00\xfe binary",
        b"",
        bytes(rnd.choice(b"abcdefghij \xc3\xa9") for _ in range(MIB)).replace(b"\xc3\xa9", b"e\xcc"),  # 1 MiB, not UTF-8
        b"x" * MIB,
    )
]
STRING_RECORDS = [
    (b"user:42", b"a value"),
    (b"a/b c%", "\u00e9t\u00e9".encode()),
    ("\u00e9t\u00e9 \U0001f511".encode(), b"\xff\x00\n"),
    (b"empty", b""),
    (b"big", b"y" * MIB),
    (b"k" * 1024, b"long key"),
]
MISS = "00000000-0000-4000-8000-000000000000"


def enc(key: bytes) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


@pytest.fixture(scope="module")
def uuid_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("proto")
    build_table(write_records(d / "u.data", UUID_RECORDS), d / "u.kvt")
    with running_server(d / "u.kvt", "--keepalive", "2", workers=1) as (url, proc):
        yield int(url.rsplit(":", 1)[1]), url


@pytest.fixture(scope="module")
def string_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("proto") / "s.kvt"
    path.write_bytes(reference_table(STRING_RECORDS, kind="string", meta={"format": 2, "key_kind": "string"}))
    with running_server(path, workers=1) as (url, proc):
        yield int(url.rsplit(":", 1)[1]), url


def get(path: str, method: str = "GET", version: str = "1.1", headers: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{headers}\r\n".encode()


def read_response(s: socket.socket, buf: bytearray, method: str = "GET") -> tuple[bytes, bytes]:
    """One response from `s` (what is read past it stays in `buf`): (head without the date line, body)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(1 << 20)
        assert chunk, f"connection closed before a response; got {bytes(buf)!r}"
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    m = re.search(rb"\r\ncontent-length: (\d+)\r\n", head)
    length = int(m.group(1)) if m and method != "HEAD" else 0
    while len(buf) < length:
        chunk = s.recv(1 << 20)
        assert chunk, "connection closed inside a body"
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    assert re.search(rb"\r\ndate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n", head), head
    return re.sub(rb"\r\ndate: [^\r]*", b"", head), body


def protocol_hits(url: str, headers=None) -> float:
    """kv_protocol_hits_total; /metrics is rendered at most once a second, so ask until it moves."""
    text = httpx.get(f"{url}/metrics", headers=headers).raise_for_status().text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kv_protocol_hits_total"))


def settled_hits(url: str, at_least: float, timeout: float = 5.0, headers=None) -> float:
    deadline = time.monotonic() + timeout
    while True:
        n = protocol_hits(url, headers)
        if n >= at_least or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def batch(*keys: str) -> bytes:
    body = ('{"keys": [' + ", ".join(f'"{k}"' for k in keys) + "]}").encode()
    return (f"POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def both_paths(port: int, path: str, method: str) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """(the answer alone on a connection: the protocol path; the same request
    pipelined behind a miss, so behind a request in flight: the ASGI path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = bytearray()
        s.sendall(get(path, method))
        alone = read_response(s, buf, method)
        s.sendall(get(f"/v1/keys/{MISS}") + get(path, method))
        assert read_response(s, buf)[0].startswith(b"HTTP/1.1 404 ")
        behind = read_response(s, buf, method)
    return alone, behind


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_uuid_hits_are_byte_identical_on_the_protocol_and_asgi_paths(uuid_server, method):
    port, url = uuid_server
    before = settled_hits(url, 0)
    for key, value in UUID_RECORDS:
        for path in (f"/v1/keys/{key}", f"/v1/keys/{key.upper()}", f"/v1/keys/{key.replace('-', '')}"):
            alone, behind = both_paths(port, path, method)
            assert alone == behind, path
            assert alone[0].startswith(b"HTTP/1.1 200 OK\r\n")
            assert alone[1] == (b"" if method == "HEAD" else value)
    # Every `alone` request took the protocol path (the `behind` ones could not).
    assert settled_hits(url, before + 3 * len(UUID_RECORDS)) == before + 3 * len(UUID_RECORDS)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_string_hits_are_byte_identical_on_the_protocol_and_asgi_paths(string_server, method):
    port, url = string_server
    before = settled_hits(url, 0)
    n = 0
    for key, value in STRING_RECORDS:
        paths = {f"/v1/keys/{enc(key)}"}
        if all(c > 0x20 and c < 0x7F and c not in b"%?#/" for c in key):
            paths.add(f"/v1/keys/{key.decode()}")  # as it is: not percent-decoded on either path
        for path in paths:
            alone, behind = both_paths(port, path, method)
            assert alone == behind, path
            assert alone[1] == (b"" if method == "HEAD" else value)
            n += 1
    assert settled_hits(url, before + n) == before + n


def test_pipelined_requests_are_answered_in_order_and_exactly(uuid_server):
    """200 requests in one write: hits (some answered in the protocol, those
    behind a request in flight by the ASGI path), misses, malformed keys,
    HEADs, conditional and JSON requests, batches and routes FastAPI serves;
    each answer is the one the request gets alone."""
    port, url = uuid_server
    hits = [k for k, v in UUID_RECORDS if len(v) < 1000]
    kinds = [
        lambda: ("GET", get(f"/v1/keys/{rnd.choice(hits)}")),
        lambda: ("GET", get(f"/v1/keys/{rnd.choice(hits)}")),
        lambda: ("HEAD", get(f"/v1/keys/{rnd.choice(hits)}", "HEAD")),
        lambda: ("GET", get(f"/v1/keys/{uuid.uuid4()}")),
        lambda: ("GET", get("/v1/keys/not-a-key")),
        lambda: ("GET", get(f"/v1/keys/{rnd.choice(hits)}", headers="Accept: application/json\r\n")),
        lambda: ("POST", batch(rnd.choice(hits), MISS)),
        lambda: ("GET", get("/openapi.json")),
        lambda: ("GET", get("/healthz")),
        lambda: ("GET", get("/no/such/route")),
    ]
    requests = [rnd.choice(kinds)() for _ in range(200)]
    requests[:3] = [kinds[0](), kinds[2](), kinds[0]()]  # the first ones are answered in the protocol
    expected = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = bytearray()
        for method, raw in requests:
            s.sendall(raw)
            expected.append(read_response(s, buf, method))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(raw for _, raw in requests))
        buf = bytearray()
        got = [read_response(s, buf, method) for method, _ in requests]
        assert not buf
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"request {i}: {requests[i][1][:80]!r}"


def test_keep_alive_connection_close_and_http_1_0(uuid_server):
    port, url = uuid_server
    key, value = UUID_RECORDS[0]
    before = settled_hits(url, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        buf = bytearray()
        for _ in range(3):  # kept alive
            s.sendall(get(f"/v1/keys/{key}"))
            head, body = read_response(s, buf)
            assert body == value and b"connection:" not in head
        s.sendall(get(f"/v1/keys/{key}", headers="Connection: close\r\n") + get(f"/v1/keys/{key}"))
        head, body = read_response(s, buf)
        assert head.endswith(b"\r\nconnection: close\r\n\r\n") and body == value
        assert s.recv(1) == b"" and not buf, "the connection stayed open after Connection: close (or answered past it)"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(get(f"/v1/keys/{key}", version="1.0"))
        head, body = read_response(s, bytearray())
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\nconnection: close\r\n\r\n") and body == value
        assert s.recv(1) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # HTTP/1.0 asking for keep-alive: uvicorn closes
        s.sendall(get(f"/v1/keys/{key}", version="1.0", headers="Connection: keep-alive\r\n"))
        head, body = read_response(s, bytearray())
        assert head.endswith(b"\r\nconnection: close\r\n\r\n") and body == value
        assert s.recv(1) == b""
    assert settled_hits(url, before + 6) == before + 6


def test_the_keepalive_timeout_closes_an_idle_connection_after_a_protocol_answer(uuid_server):
    port, url = uuid_server  # --keepalive 2
    key, value = UUID_RECORDS[0]
    with socket.create_connection(("127.0.0.1", port), timeout=6) as s:
        s.sendall(get(f"/v1/keys/{key}"))
        assert read_response(s, bytearray())[1] == value
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert 1.5 < time.monotonic() - t0 < 4.5


def test_many_protocol_answers_on_one_connection_are_not_one_long_head(uuid_server):
    """kv/worker.py rule 4 counts the bytes of the head now arriving; answers
    given in the protocol leave uvicorn's cycle as it was, and must still end
    a head (2,000 requests of ~70 bytes: over HEAD_LIMIT together)."""
    port, url = uuid_server
    key, value = UUID_RECORDS[0]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = bytearray()
        for _ in range(20):
            s.sendall(get(f"/v1/keys/{key}") * 100)
            for _ in range(100):
                head, body = read_response(s, buf)
                assert head.startswith(b"HTTP/1.1 200 ") and body == value


def test_a_slow_head_after_protocol_answers_is_still_cut_off(uuid_server):
    """The sweep (rule 2) closes a connection whose next head stays incomplete
    for two sweeps, after answers given in the protocol too."""
    port, url = uuid_server  # --keepalive 2: sweeps every 2 s
    key, value = UUID_RECORDS[0]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = bytearray()
        s.sendall(get(f"/v1/keys/{key}"))
        assert read_response(s, buf)[1] == value
        t0 = time.monotonic()
        closed = False
        for byte in get(f"/v1/keys/{key}")[:-2]:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.15)
        if not closed:
            s.settimeout(5)
            try:
                closed = s.recv(1) == b""
            except ConnectionResetError:
                closed = True
        assert closed and time.monotonic() - t0 < 8, "a dripping head after a protocol answer was never cut off"


def test_tokens_are_checked_on_the_protocol_path(tmp_path):
    key, value = UUID_RECORDS[0]
    build_table(write_records(tmp_path / "u.data", UUID_RECORDS[:1]), tmp_path / "u.kvt")
    (tmp_path / "tokens").write_text("sesame-open-1\n")
    (tmp_path / "tokens").chmod(0o600)
    with running_server(tmp_path / "u.kvt", "--read-token-file", tmp_path / "tokens", workers=1) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        token = {"Authorization": "Bearer sesame-open-1"}
        before = settled_hits(url, 0, headers=token)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            buf = bytearray()
            s.sendall(get(f"/v1/keys/{key}"))
            assert read_response(s, buf)[0].startswith(b"HTTP/1.1 401 ")
            s.sendall(get(f"/v1/keys/{key}", headers="Authorization: Bearer wrong-token\r\n"))
            assert read_response(s, buf)[0].startswith(b"HTTP/1.1 403 ")
            s.sendall(get(f"/v1/keys/{key}", headers="Authorization: Bearer sesame-open-1\r\n"))
            head, body = read_response(s, buf)
            assert head.startswith(b"HTTP/1.1 200 ") and body == value
        assert settled_hits(url, before + 1, headers=token) == before + 1


def test_every_hit_is_counted_in_metrics_and_stats(uuid_server):
    port, url = uuid_server
    stats = httpx.get(f"{url}/v1/stats").json()
    key, _ = UUID_RECORDS[0]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        buf = bytearray()
        for _ in range(100):
            s.sendall(get(f"/v1/keys/{key}"))
            read_response(s, buf)
    deadline = time.monotonic() + 5
    while True:
        time.sleep(0.3)
        now = httpx.get(f"{url}/v1/stats").json()
        if now["hits"] >= stats["hits"] + 100 or time.monotonic() > deadline:
            break
    assert now["hits"] - stats["hits"] == 100
    assert now["by_status"]["200"] - stats["by_status"].get("200", 0) >= 100
