"""What kv relies on inside its dependencies, checked by name.

kv subclasses uvicorn's HttpToolsProtocol and gunicorn's Arbiter, configures
uvicorn-worker through CONFIG_KWARGS, and adds whole histogram counts through
prometheus_client's private bucket values. pyproject.toml pins each of these
dependencies to the range tested here; when a new version renames or removes
one of these names, this file fails first, naming what changed, instead of a
worker failing at run time.
"""

import inspect
import re

import pytest


def _has(obj, *names):
    missing = [n for n in names if not hasattr(obj, n)]
    assert not missing, f"{obj!r} lacks {missing}: kv/worker.py or kv/metrics.py relies on them; re-check the subclass"


def test_uvicorn_protocol_has_what_kv_worker_overrides_and_reads():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    _has(
        HttpToolsProtocol,
        "connection_made",
        "shutdown",
        "timeout_keep_alive_handler",
        "data_received",
        "on_url",
        "on_headers_complete",
        "on_message_complete",
    )
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attr in ("self.timeout_keep_alive_task", "self.timeout_keep_alive", "self.server_state", "self.cycle", "self.loop"):
        assert attr in init, f"HttpToolsProtocol.__init__ no longer sets {attr}"
    conn = inspect.getsource(HttpToolsProtocol.connection_made)
    assert "self.transport" in conn
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for attr in ("self.response_complete", "self.keep_alive"):
        assert attr in cycle, f"RequestResponseCycle.__init__ no longer sets {attr}"


def test_uvicorn_server_state_has_connections_and_default_headers():
    from uvicorn.server import ServerState

    state = ServerState()
    assert isinstance(state.connections, set)
    assert isinstance(state.default_headers, list)


def test_uvicorn_config_accepts_the_worker_settings():
    from uvicorn.config import Config

    from kv.worker import KVWorker

    Config(app=lambda *a: None, **KVWorker.CONFIG_KWARGS)  # an unknown keyword raises TypeError


def test_uvicorn_worker_reads_config_kwargs():
    from uvicorn_worker import UvicornWorker

    assert "CONFIG_KWARGS" in inspect.getsource(UvicornWorker), "uvicorn-worker no longer reads CONFIG_KWARGS"


def test_gunicorn_arbiter_and_application_hooks_exist():
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    _has(Arbiter, "handle_hup", "run")
    _has(BaseApplication, "load_config", "load", "run")


def test_prometheus_histogram_child_keeps_bucket_values_and_sum():
    from prometheus_client import CollectorRegistry, Histogram

    h = Histogram("kv_contract_seconds", "x", ["route"], buckets=(0.1, 1.0), registry=CollectorRegistry())
    child = h.labels("r")
    child._buckets[0].inc(3)  # what kv.metrics.Counts.flush does with a whole count
    child._sum.inc(0.15)
    samples = {(s.name, s.labels.get("le")): s.value for s in h.collect()[0].samples}
    assert samples[("kv_contract_seconds_bucket", "0.1")] == 3
    assert samples[("kv_contract_seconds_sum", None)] == pytest.approx(0.15)


def test_prometheus_mmaped_dict_reads_and_writes_values(tmp_path):
    from prometheus_client.mmap_dict import MmapedDict

    path = str(tmp_path / "counter_1.db")
    d = MmapedDict(path)
    d.write_value("k", 2.0, 0.0)
    assert d.read_value("k")[0] == 2.0
    d.close()
    assert [(k, v) for k, v, _, _ in MmapedDict.read_all_values_from_file(path)] == [("k", 2.0)]


def test_what_the_security_rules_of_kv_worker_read_in_uvicorn():
    """kv/worker.py rules 4-7 (issue 15): the head limit reads the cycle's
    more_body and the protocol's url; the 431 uses STATUS_LINE; the first
    notify comes from uvicorn's first tick (last_notified starts at 0)."""
    from uvicorn.protocols.http import httptools_impl
    from uvicorn.server import Server

    assert 414 in httptools_impl.STATUS_LINE and 431 in httptools_impl.STATUS_LINE
    assert "self.more_body" in inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    assert "self.url" in inspect.getsource(httptools_impl.HttpToolsProtocol.on_message_begin)
    assert "self.last_notified = 0.0" in inspect.getsource(Server.__init__)
    assert "callback_notify" in inspect.getsource(Server.on_tick)


def test_what_kv_arbiter_relies_on_for_reload_order():
    """kv/serve.py KVArbiter: spawn_worker returns the pid in the master,
    reload() spawns then calls manage_workers (which stops the oldest), and a
    worker's tmp file tells its last heartbeat."""
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.workertmp import WorkerTmp

    assert "return pid" in inspect.getsource(Arbiter.spawn_worker)
    reload = inspect.getsource(Arbiter.reload)
    assert reload.index("self.spawn_worker()") < reload.index("self.manage_workers()")
    _has(WorkerTmp, "notify", "last_update")


# -- kv/http/protocol.py: plain hits answered in the protocol (kv/worker.py rule 8) ----------------


def test_what_the_protocol_path_reads_and_sets_in_uvicorn():
    """The attributes answer() reads on the connection, and the steps of
    uvicorn's own request handling it stands in for."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    from uvicorn.server import ServerState

    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attr in (
        "self.parser",
        "self.access_log",
        "self.limit_concurrency",
        "self.connections",
        "self.tasks",
        "self.flow",
        "self.pipeline",
        "self.headers",
        "self.expect_100_continue",
        "self.cycle",
        "self.timeout_keep_alive_task",
        "self.timeout_keep_alive",
        "self.server_state",
        "self.loop",
    ):
        assert attr in init, f"HttpToolsProtocol.__init__ no longer sets {attr}: kv/http/protocol.py reads it"
    # kv/worker.py's on_message_begin resets these and leaves the scope to on_headers_complete.
    begin = inspect.getsource(HttpToolsProtocol.on_message_begin)
    assigned = sorted(set(re.findall(r"^\s+(self\.\w+)\s*=", begin, re.M)))
    assert assigned == ["self.expect_100_continue", "self.headers", "self.scope", "self.url"], (
        f"uvicorn's on_message_begin now sets {assigned}: re-check KVHttpProtocol.on_message_begin"
    )
    assert '"headers": self.headers' in begin
    for method in (HttpToolsProtocol.on_url, HttpToolsProtocol.on_header):
        assert "self.scope" not in inspect.getsource(method), "the scope is read before on_headers_complete"
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    assert "self.headers.append((name, value))" in inspect.getsource(HttpToolsProtocol.on_header)
    assert "name.lower()" in inspect.getsource(HttpToolsProtocol.on_header), "header names are no longer lower-cased"
    _has(httptools.HttpRequestParser, "get_method", "should_keep_alive", "should_upgrade", "get_http_version")
    assert hasattr(ServerState(), "total_requests") and hasattr(ServerState(), "default_headers")

    # Where rule 8 steps in: on_headers_complete starts the ASGI task, or queues behind one in flight.
    headers_complete = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    for text in (
        "existing_cycle is None or existing_cycle.response_complete",
        "self._start_asgi_task(self.cycle, app)",
        "self.pipeline.appendleft",
        'keep_alive=http_version != "1.0" and self.parser.should_keep_alive()',
        "default_headers=self.server_state.default_headers",
    ):
        assert text in headers_complete, f"uvicorn's on_headers_complete changed ({text!r}): re-check kv/http/protocol.py"
    # The answered request's cycle (protocol.ANSWERED) stops uvicorn's later callbacks.
    for method in (HttpToolsProtocol.on_message_complete, HttpToolsProtocol.on_body):
        assert "self.cycle.response_complete" in inspect.getsource(method) and "return" in inspect.getsource(method)
    assert "self.cycle.message_event.set()" in inspect.getsource(HttpToolsProtocol.connection_lost)
    # What uvicorn does after a response, which answer() does too.
    done = inspect.getsource(HttpToolsProtocol.on_response_complete)
    for text in ("self.server_state.total_requests += 1", "self.flow.resume_reading()", "self.timeout_keep_alive_handler"):
        assert text in done, f"uvicorn's on_response_complete changed ({text!r}): re-check kv/http/protocol.py"
    # The idle timer stands in timeout_keep_alive_task: uvicorn only cancels it and clears it.
    unset = inspect.getsource(HttpToolsProtocol._unset_keepalive_if_required)
    assert ".cancel()" in unset and "self.timeout_keep_alive_task = None" in unset
    assert "self._unset_keepalive_if_required()" in inspect.getsource(HttpToolsProtocol.data_received)
    # The response bytes: default headers, then the app's, `connection: close` last when not kept alive.
    send = inspect.getsource(RequestResponseCycle.send)
    for text in (
        'self.default_headers + list(message.get("headers", []))',
        "name = name.lower()",
        'b"connection: close\\r\\n"',
        'if self.scope["method"] == "HEAD"',
    ):
        assert text in send, f"uvicorn's response writing changed ({text!r}): re-check kv/http/protocol.py"


class _Transport:
    """What uvicorn's protocol needs of a transport, recording writes."""

    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def write(self, data):
        self.out += data

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _protocol(app):
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from kv.worker import KVHttpProtocol

    config = Config(app=app, http=KVHttpProtocol, ws="none", log_config=None, proxy_headers=False, server_header=False)
    config.load()
    server_state = ServerState()
    server_state.default_headers = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]
    conn = KVHttpProtocol(config, server_state, {})
    conn.access_log = False  # as under kv serve (no access log); pytest's log capture would turn it on
    transport = _Transport()
    conn.connection_made(transport)
    return conn, transport


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_protocol_path_writes_what_uvicorn_writes_for_the_asgi_path(tmp_path, method):
    """In process, the real uvicorn protocol: the same request answered by
    rule 8 and, with it turned off, by uvicorn running the ASGI app."""
    import asyncio

    from conftest import write_records

    from kv.app import create_app
    from kv.build import build_table

    key = "3479d894-3271-4935-88cf-a06f3cbb80a5"
    build_table(write_records(tmp_path / "c.data", [(key, "\u00e9t\u00e9".encode())]), tmp_path / "c.kvt")
    app = create_app(tmp_path / "c.kvt")
    answers = []
    for version in ("1.1", "1.0"):
        request = f"{method} /v1/keys/{key} HTTP/{version}\r\nHost: t\r\n\r\n".encode()

        async def answer(path, request=request):
            conn, transport = _protocol(app)
            if path != "quick":
                conn._quick = None  # the head goes to httptools
            if path == "asgi":
                conn._answer = None
            quick = conn._quick
            conn.data_received(request)
            for _ in range(20):
                await asyncio.sleep(0)
            conn.connection_lost(None)
            return bytes(transport.out), conn.answered, quick is not None and getattr(conn, "url", None) is None

        answers.append([asyncio.run(answer(path)) for path in ("quick", "protocol", "asgi")])
    for version, ((quick, q_taken, unparsed), (proto, taken, _), (asgi, not_taken, _)) in zip(("1.1", "1.0"), answers, strict=True):
        assert (q_taken, taken, not_taken) == (1, 1, 0), "rule 8 did not answer a plain hit (or answered with it turned off)"
        assert quick == proto == asgi and proto.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
        assert unparsed == (version == "1.1"), (
            "an HTTP/1.1 plain hit read whole is answered without httptools (protocol.QUICK), 1.0 with it"
        )


def test_uvicorn_parse_url_keeps_an_ascii_key_path_as_sent():
    """The protocol path takes the key from the raw request target (no `?`,
    `#` or non-ASCII byte in it) where uvicorn takes it from
    httptools.parse_url(url).path: the same bytes for every ASCII character
    a request line may carry."""
    import httptools

    for c in range(0x21, 0x7F):
        if chr(c) in "?#":
            continue
        url = b"/v1/keys/a" + bytes([c]) + b"b%41"
        assert httptools.parse_url(url).path == url, chr(c)


def test_kv_serve_answers_plain_hits_in_the_protocol(gen_table):
    """If a uvicorn or uvicorn-worker upgrade wraps the app, renames what
    rule 8 reads, or stops calling on_headers_complete, hits would silently
    go back to the ASGI path: kv_protocol_hits_total says which path served."""
    import time

    import httpx
    from serverutil import running_server

    table, records = gen_table
    with running_server(table, workers=1) as (url, proc):
        with httpx.Client() as c:
            for k, v in records[:50]:
                assert c.get(f"{url}/v1/keys/{k}").content == v
        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(f"{url}/metrics").text
            n = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("kv_protocol_hits_total"))
            if n >= 50 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert n == 50, f"{n} of 50 plain hits were answered in the protocol (kv/http/protocol.py)"


def test_httptools_reads_every_head_quick_accepts_as_the_quick_path_does():
    """kv/http/protocol.py answers a read matching QUICK (Host first) without httptools:
    for every such head (a corpus of plain heads, mutated a byte or two at a
    time), httptools must accept it as one complete, kept-alive HTTP/1.1
    request with the same method, target and lower-cased (name, value) pairs."""
    import random

    import httptools

    from kv.http.protocol import _FIELD, _NOT_QUICK, QUICK, QUICK_TOKEN

    class Recorder:
        def __init__(self):
            self.url, self.headers, self.done = b"", [], 0

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.headers.append((name.lower(), value))

        def on_message_complete(self):
            self.done += 1

    key = b"3479d894-3271-4935-88cf-a06f3cbb80a5"
    bases = [
        b"GET /v1/keys/" + key + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
        b"HEAD /v1/keys/" + key + b" HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer abc\r\nAccept: */*\r\n\r\n",
        b"GET /v1/keys/a%20b~!$&'()*+,;=:@ HTTP/1.1\r\nhost:h\r\nUser-Agent: curl/8.5.0\r\nX-A: a b  c\r\n\r\n",
        b"GET /v1/keys/" + key + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"GET /v1/keys/" + key + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Bearer tok-0123456789\r\n\r\n",
    ]
    alphabet = b' \t\r\n:;,%?#/\x00\x7f\x80\xffaZ0-"(){}[]\\'
    rng = random.Random(16)
    heads = list(bases)
    for _ in range(6000):
        head = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(head))
            if rng.random() < 0.5:
                head[i : i + 1] = bytes([rng.choice(alphabet)])
            else:
                head[i:i] = bytes([rng.choice(alphabet)])
        heads.append(bytes(head))
    accepted = token_heads = 0
    for head in heads:
        t = QUICK_TOKEN.fullmatch(head)
        m = QUICK.fullmatch(head)
        if t is not None:  # a strict subset of QUICK: the same groups, the one field Authorization
            token_heads += 1
            assert m is not None and m.group(1, 2, 3) == t.group(1, 2, 3), head
            assert [(n.lower(), v) for n, v in _FIELD.findall(m[4])] == [(b"authorization", t[4])], head
        quick_headers = [(b"host", m[3])] + [(n.lower(), v) for n, v in _FIELD.findall(m[4])] if m else []
        if m is None or any(n in _NOT_QUICK for n, _ in quick_headers):
            continue  # left to httptools
        accepted += 1
        rec = Recorder()
        parser = httptools.HttpRequestParser(rec)
        parser.feed_data(head)  # raises on a head httptools refuses
        assert (rec.done, parser.get_method(), parser.get_http_version(), parser.should_keep_alive()) == (1, m[1], "1.1", True), head
        assert (rec.url, rec.headers) == (b"/v1/keys/" + m[2], quick_headers), head
    assert 500 < accepted < len(heads) - 500, accepted  # the corpus exercises both sides
    assert token_heads > 100, token_heads
