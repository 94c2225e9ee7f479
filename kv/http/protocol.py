"""Plain hits answered inside the connection protocol, before ASGI.

The ASGI layer, not the lookup, is what a hit costs under uvicorn: a scope
dict, a cycle object, a task, two `send` awaits (docs/PERF-NOTES "Beyond the
ASGI ceiling"). So kv's protocol (kv/worker.py, KVHttpProtocol, a subclass
of uvicorn's HttpToolsProtocol) asks `answer` from `on_headers_complete`,
where uvicorn would start the ASGI task; `answer` writes the whole response
itself, in one `transport.write`, when the request is a plain hit:

- GET or HEAD of /v1/keys/{key}, origin-form, no query or fragment, ASCII;
- nothing in flight before it on the connection (the last request's response
  is complete; a pipelined request behind one in flight waits its turn in
  uvicorn's queue as today), reading and writing not paused (flow control:
  uvicorn's path waits for the transport to drain; this one cannot);
- headers plain by the ASGI fast path's own rules (fastpath.plain_headers:
  Host first, no If-None-Match, no Accept mentioning JSON, no body, sizes,
  the read token when tokens are on), no `Expect: 100-continue`, no Upgrade;
- the key found by the ASGI fast path's own lookup (fastpath.plain_lookup:
  same decoding, same shard rule);
- no access log and no concurrency limit configured (kv configures neither).

Anything else returns False and uvicorn carries on exactly as without this
module: the ASGI fast path, the checked path, FastAPI.

`answer.quick` is the same answer one step earlier: kv/worker.py's
data_received hands it a read that may be one whole request head, when
httptools holds no part of a request and nothing is in flight. When the
read is exactly one head of the QUICK form (HTTP/1.1, Host first, no header
that frames a body or changes keep-alive or Expect), it is parsed by one
regular expression instead of httptools and answered by the same rules; else
httptools parses it as before. Under a client that waits for each answer
(wrk, most clients), this is every hit: uvicorn's per-request callbacks
(on_message_begin, on_url, one on_header per header, on_headers_complete,
on_message_complete) and the parser's own work were, with the timer cancel
in data_received, most of what a hit still cost over a raw uvloop +
httptools protocol (docs/BENCHMARKS.md).

The response is byte for byte what the ASGI path sends (tests/test_protocol.py):
uvicorn's status line, the server's default headers (`date` from the
server's clock; `connection: close` while the worker drains, kv/worker.py
rule 1), the hit headers read from the State at request time (`etag`,
`x-kv-generation`), content-length, content-type, then `connection: close`
when the request does not keep the connection alive (HTTP/1.0 without
keep-alive, `Connection: close`), then the value (none for HEAD). After it,
what uvicorn does after a response (on_response_complete): count the
request in `server_state.total_requests` (gunicorn's max_requests), close
when the connection does not stay alive, else arm the keep-alive timer. The
protocol's `cycle` becomes ANSWERED, a finished cycle, so that uvicorn's
`on_message_complete` (and everything reading `cycle`) sees the request done.

Counting: a lookup hit and a latency bucket in `state.counts.protocol`,
flushed as the ASGI fast path's hits are (same route label, status 200),
plus `kv_protocol_hits_total`, which says how many took this path.

What kv relies on in uvicorn for this is checked by name and by behaviour in
tests/test_contracts.py; pyproject.toml pins the tested range.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from .. import metrics
from .fastpath import FAST_MAX_FIELD, plain_headers, plain_lookup
from .negotiation import BINARY, TEXT
from .routes import KEY_PREFIX
from .state import State


class _NoEvent:
    def set(self) -> None:
        pass


class _Answered:
    """The `cycle` of a connection whose last request this module answered:
    complete, with nothing more to read or send (what uvicorn and
    kv/worker.py read of a cycle between requests)."""

    response_complete = True
    more_body = False
    keep_alive = True
    disconnected = False
    scope = None
    message_event = _NoEvent()


ANSWERED = _Answered()
CLOSED = _Answered()  # ... and closed it after: requests parsed behind it are dropped, as uvicorn drops a closed connection's queue


class IdleTimer:
    """The keep-alive timeout after answers given here, at a fraction of the
    cost of uvicorn's: one loop timer per connection, re-armed only when it
    fires (creating and cancelling a uvloop timer for every request costs
    more than the rest of an answer). It stands in `timeout_keep_alive_task`
    as uvicorn's timer handle does: uvicorn's data_received "cancels" it
    (clears `armed`) when bytes arrive, as it cancels its own. When the loop
    timer fires: cancelled since, nothing (uvicorn's path or the next answer
    owns the connection's idleness again); idle for less than the timeout,
    wait the rest; else the protocol's own keep-alive handler (which closes,
    or re-arms when the socket holds unread bytes: kv/worker.py rule 5)."""

    __slots__ = ("conn", "handle", "since", "armed")

    def __init__(self, conn: Any):
        self.conn = conn
        self.handle: Any = None
        self.since = 0.0
        self.armed = False

    def arm(self, now: float) -> None:
        self.since = now  # time.perf_counter(): CLOCK_MONOTONIC, as the loop's clock
        self.armed = True
        if self.handle is None:
            self.handle = self.conn.loop.call_later(self.conn.timeout_keep_alive, self._fire)

    def cancel(self) -> None:
        self.armed = False

    def _fire(self) -> None:
        self.handle = None
        conn = self.conn
        if not self.armed or conn.timeout_keep_alive_task is not self:
            return
        left = self.since + conn.timeout_keep_alive - time.perf_counter()
        if left > 0:
            self.handle = conn.loop.call_later(left, self._fire)
            return
        self.armed = False
        conn.timeout_keep_alive_handler()  # sets timeout_keep_alive_task to None (or a timer of its own) first


# The one request form answered without httptools (`quick`): a whole read
# that is one GET or HEAD head of /v1/keys/{key}, HTTP/1.1, the key of
# unreserved and sub-delim characters (no query, fragment or non-ASCII),
# each header a token name, ":", at most one space and a value of visible
# ASCII characters and spaces that starts and ends visible (no tab, no
# obs-fold, nothing for llhttp to trim), Host first (as plain_headers
# requires; groups: method, key, host, the other fields). httptools accepts every head of this form and
# reports the same method, target and (name, value) pairs
# (tests/unit/test_contracts.py checks a corpus); anything else is parsed
# by httptools as before.
_VALUE = rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?"
_REQUEST_LINE = rb"(GET|HEAD) /v1/keys/([-0-9A-Za-z._~%!$&'()*+,;=:@]+) HTTP/1\.1\r\n[Hh][Oo][Ss][Tt]: ?"
QUICK = re.compile(_REQUEST_LINE + rb"(" + _VALUE + rb")\r\n" + rb"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+: ?" + _VALUE + rb"\r\n)*)\r\n")
_FIELD = re.compile(rb"([^:]+): ?([^\r]+)\r\n")  # the fields after Host of a head QUICK matched
# A token holder's usual head, Host then Authorization and nothing else: a
# strict subset of QUICK (a Host value without spaces, a `Bearer` value of
# visible characters; groups: method, key, host, the Authorization value),
# tried first when tokens are on. It hands the value over without a second
# look at the fields (tests/unit/test_contracts.py checks the subset).
QUICK_TOKEN = re.compile(_REQUEST_LINE + rb"([!-~]+)\r\n[Aa]uthorization: ?(Bearer [!-~]+)\r\n\r\n")
# Headers that change how llhttp frames the message or keeps the connection
# (a body, Connection tokens, an upgrade) or that uvicorn acts on (Expect):
# a head with one of them goes to httptools, then answer() if plain.
_NOT_QUICK = frozenset((b"connection", b"proxy-connection", b"upgrade", b"expect", b"content-length", b"transfer-encoding"))

_CONTENT_TYPE = {TEXT: b"content-type: " + TEXT.encode() + b"\r\n", BINARY: b"content-type: " + BINARY.encode() + b"\r\n"}


def _render(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name.lower() + b": " + value + b"\r\n" for name, value in headers)  # lower(): as uvicorn's send


def _says_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """As uvicorn's send: a `connection` header with the `close` token ends the connection."""
    return any(name.lower() == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")] for name, value in headers)


def hit_answerer(state: State) -> Callable[[Any], bool]:
    """on_headers_complete's question, per worker (locals bound once): True
    when it answered (module docstring). The function carries `quick`, the
    same answer for a whole request head handed over as bytes (QUICK)."""
    lookup, plain, allows = plain_lookup(state), plain_headers, state.guard.allows
    prefix, cut = KEY_PREFIX, len(KEY_PREFIX)
    clock = time.perf_counter
    respond = _responder(state)

    def answer(conn: Any) -> bool:
        t0 = clock()
        cycle = conn.cycle
        if cycle is CLOSED:
            return True  # pipelined behind an answer that closed the connection: nothing more is answered
        url = conn.url
        if url[:cut] != prefix:
            return False
        if cycle is not None and not cycle.response_complete:
            return False  # a request in flight: this one queues behind it (uvicorn's pipeline)
        parser = conn.parser
        method = parser.get_method()
        head_only = method == b"HEAD"
        if method != b"GET" and not head_only:
            return False
        key = url[cut:]
        if b"?" in key or b"#" in key or not key.isascii():  # query, fragment: parsed by uvicorn; non-ASCII: uvicorn's 400
            return False
        flow = conn.flow
        if conn.expect_100_continue or flow.read_paused or flow.write_paused or parser.should_upgrade() or conn.access_log:
            return False
        limit = conn.limit_concurrency
        if limit is not None and (len(conn.connections) >= limit or len(conn.tasks) >= limit):
            return False  # uvicorn's 503
        headers = conn.headers
        if conn.transport.is_closing() or not plain(headers, allows):
            return False
        value = lookup(key)
        if value is None:
            return False
        keep_alive = parser.should_keep_alive()
        if keep_alive and len(headers) > 1:  # HTTP/1.0 with `Connection: keep-alive`: uvicorn closes all the same
            for name, _ in headers:
                if name == b"connection":
                    keep_alive = parser.get_http_version() != "1.0"  # formats a string (0.5 us): only when it can matter
                    break
        respond(conn, t0, value, head_only, keep_alive)
        return True

    answer.quick = _quick_answerer(lookup, allows, respond)  # type: ignore[attr-defined]
    return answer


def _quick_answerer(lookup: Callable[[bytes], bytes | None], allows: Any, respond: Callable[..., None]) -> Callable[[Any, bytes], bool]:
    """`answer.quick` (module docstring): answer() for a read that is exactly
    one request head of QUICK's form, parsed here instead of by httptools
    (kv/worker.py asks only when the parser stands between requests and
    nothing is in flight). False, having changed nothing, for anything else."""
    clock, plain = time.perf_counter, plain_headers
    match, fields, not_quick, field_max = QUICK.fullmatch, _FIELD.findall, _NOT_QUICK, FAST_MAX_FIELD
    token_match = QUICK_TOKEN.fullmatch if allows is not None else None

    def quick(conn: Any, data: bytes) -> bool:
        t0 = clock()
        m = token_match(data) if token_match is not None else None
        if m is not None:
            # Host and Authorization alone: plain_headers' answer, without the call
            if len(m[3]) > field_max - 4 or len(m[4]) > field_max - 13 or not allows(m[4]):
                return False
        else:
            m = match(data)
            if m is None:
                return False
            host, rest = m[3], m[4]
            if len(host) > field_max - 4:
                return False  # plain_headers' answer too
            if rest or allows is not None:  # more than a lone Host header (whose answer is known)
                headers = [(b"host", host)]
                for name, value in fields(rest):
                    name = name.lower()  # as uvicorn's on_header
                    if name in not_quick:
                        return False
                    headers.append((name, value))
                if not plain(headers, allows):
                    return False
        flow = conn.flow
        if flow.read_paused or flow.write_paused or conn.access_log or conn.limit_concurrency is not None or conn.transport.is_closing():
            return False
        value = lookup(m[2])
        if value is None:
            return False
        respond(conn, t0, value, m[1] == b"HEAD", True)
        return True

    return quick


def _responder(state: State) -> Callable[..., None]:
    """The end of every answer: write the hit's response, then do what
    uvicorn does after one (module docstring)."""
    from .negotiation import content_type as media_type

    lookups, tally = state.counts.lookups, state.counts.protocol
    clock, where, buckets = time.perf_counter, bisect_left, metrics.LATENCY_BUCKETS
    first = buckets[0]
    content_type = _CONTENT_TYPE
    text_line = content_type[TEXT]
    # The rendered head (status line, default headers, hit headers) of the
    # last response, and what it was rendered from: the server replaces its
    # default_headers list every second (the date) and on a drain; the hit
    # headers may change with the generation.
    cache: list[Any] = [None, None, b"", False]  # default_headers, hit_headers, head, says close

    def respond(conn: Any, t0: float, value: bytes, head_only: bool, keep_alive: bool) -> None:
        server_state = conn.server_state
        default_headers = server_state.default_headers
        hit_headers = state.hit_headers
        if default_headers is not cache[0] or hit_headers != cache[1]:
            _render_head(cache, default_headers, hit_headers)
        keep_alive = keep_alive and not cache[3]
        ctype = text_line if value.isascii() else content_type[media_type(value)]
        end = b"\r\n" if keep_alive or cache[3] else b"connection: close\r\n\r\n"
        transport = conn.transport
        transport.write(b"".join((cache[2], b"content-length: %d\r\n" % len(value), ctype, end, b"" if head_only else value)))
        conn.answered += 1
        server_state.total_requests += 1
        lookups[0] += 1
        if keep_alive:
            conn.cycle = ANSWERED
            # Armed as uvicorn arms its keep-alive timeout after a response
            # (IdleTimer.arm, inlined). Here the connection's timer is None
            # (data_received cancelled it) or this IdleTimer (left armed by
            # the quick path, or by an answer earlier in this read).
            idle = conn.idle_timer
            if idle is None:
                idle = conn.idle_timer = IdleTimer(conn)
            idle.since, idle.armed = t0, True
            if idle.handle is None:
                idle.handle = conn.loop.call_later(conn.timeout_keep_alive, idle._fire)
            conn.timeout_keep_alive_task = idle
        else:
            conn.cycle = CLOSED
            transport.close()
        took = clock() - t0
        tally[0 if took <= first else where(buckets, took)] += 1

    return respond


def _render_head(cache: list[Any], default_headers: list[Any], hit_headers: list[Any]) -> None:
    """Render the response head again (the date ticked, a drain began, the generation changed)."""
    cache[:] = (
        default_headers,
        list(hit_headers),
        STATUS_LINE[200] + _render(default_headers) + _render(hit_headers),
        _says_close(default_headers),
    )


_ANSWERERS: dict[int, tuple[Any, Callable[[Any], bool] | None]] = {}


def answerer_for(app: Any) -> Callable[[Any], bool] | None:
    """The answerer of the ASGI app uvicorn serves, made once per app; None
    when the app is not kv's (create_app's closure carries its State as
    `.state`), e.g. a benchmark's bare app under kv's worker class."""
    entry = _ANSWERERS.get(id(app))
    if entry is None or entry[0] is not app:
        state = getattr(app, "state", None)
        entry = (app, hit_answerer(state) if isinstance(state, State) else None)
        _ANSWERERS[id(app)] = entry
    return entry[1]
