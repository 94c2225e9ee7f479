"""The ASGI front of a worker: a lean fast path for the one request that
matters most, a plain hit on GET /v1/keys/{key}, and the size limits no layer
below sets for uvicorn.

FastAPI's routing, validation and response classes cost more than the table
lookup itself, so `FastPath` answers plain hits directly: one prefix check, a
scan of a handful of headers (no body, Host first, nothing conditional or
JSON, the read token), `Table.get` on the raw path bytes (for a string
table percent-decoded first, only when they hold a "%"), one precomputed
header list, two `send` calls. Everything else (misses, malformed keys, JSON,
HEAD, If-None-Match, every other route) takes the checked path, `_slow`,
which enforces the limits, then sends every request whose RAW path starts
with /v1/keys/ to the key handler itself (FastAPI routes on the decoded path,
where a key's "%2F" would become a path separator) and the rest to FastAPI.
The handler produces the same bytes for a hit (tests/unit/test_fastpath.py proves
it).

Under kv's worker most plain hits never reach this module's ASGI app: the
connection protocol answers them first (kv/http/protocol.py), by the same
rules, which live here (`plain_headers`, `plain_lookup`) so that both fast
paths answer exactly the same requests. This one answers the plain GET hits
the protocol leaves to uvicorn: those pipelined behind a request in flight,
and every hit under another server.

The checked path refuses, each with a problem response:
- a request target (path and query) over MAX_PATH bytes: 414;
- headers over MAX_HEADERS bytes or MAX_HEADER_FIELDS lines: 431;
- an HTTP/1.1 request without a Host header: 400 (RFC 9112, 3.2);
- a body over `max_body` bytes, declared or sent: 413;
- a body that takes longer than `body_seconds` to arrive: 408;
- with read tokens, a request without an accepted one: 401/403 (kv/http/auth.py,
  which the fast path's header loop also asks).

Every request it sees is counted by route label and status. A client that
disconnects before its request body has arrived got no response at all: it
is counted with status DISCONNECTED, 499 (nginx's "client closed request"),
never as a 5xx, which would be the server's fault.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from xxhash import xxh3_64_intdigest

from .. import metrics
from ..errors import InvalidKey, TableCorrupt
from ..head import COUNTER_AT
from ..keys import MAX_STRING_KEY
from ..speedups import unquote_bytes
from . import writes
from .handlers import batch_from_body, key_from_scope
from .negotiation import content_type
from .problems import problem
from .routes import BATCH, KEY, KEY_PREFIX, WRITE_ROUTE, label
from .state import State

log = logging.getLogger("kv")
COUNTER = struct.Struct("<Q")  # kv/head.py: the change counter
WRITE_METHODS = ("PUT", "DELETE", "POST")

# Bytes of request target, path and query: the longest legal key (a string key
# of MAX_STRING_KEY bytes) fully percent-encoded after the prefix, with room
# for a short query. A UUID key URL is under 50.
MAX_PATH = 4096
assert MAX_PATH >= len(KEY_PREFIX) + 3 * MAX_STRING_KEY
MAX_HEADERS = 16384  # bytes of all header names and values
MAX_HEADER_FIELDS = 100  # header lines (gunicorn's and nginx-era default)
# The fast path checks only count and value length, which bound the total the same way.
FAST_MAX_HEADERS = 16
FAST_MAX_FIELD = MAX_HEADERS // FAST_MAX_HEADERS  # name + value: 16 of them stay within MAX_HEADERS
BODY_SECONDS = 10.0  # the whole request body must arrive within this (a 1000-key batch is 40 KB)
BODY_METHODS = ("POST", "PUT", "PATCH")
DISCONNECTED = 499  # the status label of a request whose client left before its body arrived

ASGIApp = Callable[..., Any]


def plain_headers(headers: list[tuple[bytes, bytes]], allows: Callable[[bytes | None], bool] | None) -> bool:
    """Whether a request's headers let a hit be answered on a fast path (the
    ASGI one here, the protocol one in kv/http/protocol.py): the same rules
    for both, so that both answer exactly the same requests.

    Conditional, JSON (any case: RFC 9110 media types are case-insensitive)
    and oversized requests take the checked path, which checks every limit
    (431, 414) and says why; so do requests with a body (Content-Length or
    Transfer-Encoding: the checked path bounds it). Host comes first from
    every client and proxy we know (curl, httpx, wrk, browsers, nginx); a
    request whose first header is not Host, perhaps missing it (a 400), takes
    the checked path. With read tokens, the one Authorization header must
    hold one (the checked path answers 401 or 403 otherwise, 400 for two)."""
    bearer = None
    for name, value in headers:
        if (
            name == b"if-none-match"
            or (name == b"accept" and b"json" in value.lower())
            or len(name) + len(value) > FAST_MAX_FIELD
            or name == b"content-length"
            or name == b"transfer-encoding"
        ):
            return False
        if name == b"authorization":
            if bearer is not None:
                return False  # more than one: the checked path refuses the request (400)
            bearer = value
    if len(headers) > FAST_MAX_HEADERS or not headers or headers[0][0] != b"host":
        return False
    return allows is None or allows(bearer)


_MISSING = object()


def plain_lookup(state: State) -> Callable[[bytes], bytes | None]:
    """The function of a key as it is in the raw path (after /v1/keys/, still
    percent-encoded) that returns its value on a hit of this server's table,
    None on anything else (a miss, a malformed key, a key of another shard, a
    corrupt record: the checked path looks again and says why).

    String keys arrive percent-encoded; one that has no "%" is its own bytes.
    UUID keys are never decoded here (a plain UUID has no "%"; an encoded one
    misses and the checked path decodes it)."""
    live = state.live
    if live is None:
        return _kind_lookup(state.table.get, state.table.key_kind, state.shard)
    # On a root the protocol path (kv/http/protocol.py), which answers before
    # the ASGI app, makes the per-request head check itself: one unpack, one
    # compare; on a change the worker catches up (and State.hit_headers
    # follow) before the lookup. A publish may change the root's key kind:
    # the lookup for the new kind replaces the old one then (a listener).
    counter, head, seen, catch_up = COUNTER.unpack_from, live.head.mm, live.seen, live.catch_up
    shard, get = state.shard, live.get

    def for_kind(kind: str) -> Callable[[bytes], bytes | None]:
        plain_get = _kind_lookup(get, kind, shard)
        return _live_uuid_lookup(live, plain_get) if kind == "uuid" and shard[1] == 1 else plain_get

    current: list[Any] = [live.kind, for_kind(live.kind)]  # the kind, and its lookup

    def on_change() -> None:
        if live.kind != current[0]:
            current[:] = [live.kind, for_kind(live.kind)]

    live.listeners.append(on_change)

    def live_lookup(key: bytes) -> bytes | None:
        if counter(head, COUNTER_AT)[0] != seen[0]:
            catch_up()
        return current[1](key)

    return live_lookup


def _kind_lookup(get: Callable[[bytes], bytes | None], kind: str, shard: tuple[int, int]) -> Callable[[bytes], bytes | None]:
    """plain_lookup for a table (or a root's view) of one key kind: `get` of
    the key as the table spells it, percent-decoded for string keys, and only
    this shard's keys."""
    decode = kind == "string"
    unquote = unquote_bytes()  # C when built: urllib's takes ~2 us a key
    if shard[1] > 1:  # a shard answers its own keys here, others on the checked path (421)
        own, table_get = shard[0], get
        if decode:
            mask, xxh3 = shard[1] - 1, xxh3_64_intdigest  # kv.keys.string_shard_of, inlined

            def get(kb: bytes) -> bytes | None:
                return table_get(kb) if xxh3(kb) & mask == own else None
        else:
            shift = 8 - (shard[1].bit_length() - 1)

            def get(kb: bytes) -> bytes | None:
                try:
                    return table_get(kb) if int(kb[:2], 16) >> shift == own else None
                except ValueError:
                    return None

    def lookup(key: bytes) -> bytes | None:
        try:
            return get(unquote(key) if decode and b"%" in key else key)
        except (InvalidKey, TableCorrupt):
            return None

    return lookup


def _live_uuid_lookup(live: Any, plain_get: Callable[[bytes], bytes | None]) -> Callable[[bytes], bytes | None]:
    """LiveTable.get of an unsharded UUID root, flattened for the protocol
    path: two calls fewer, and no regular expression to tell a canonical key
    (the overlay's spelling) from another: 36 bytes, hyphens in place, no
    upper case is canonical or malformed, and a malformed key misses in the
    base too. Other spellings (upper case, 32 digits) take LiveTable.get."""
    view, missing = live.view, _MISSING  # [base lookup, overlay, ...], replaced in place when the base changes

    def live_uuid_lookup(key: bytes) -> bytes | None:
        overlay = view[1]
        if overlay:
            value = overlay.get(key, missing)
            if value is not missing:
                return value  # None for a deleted key: the checked path says 404
            if len(key) != 36 or key[8:24:5] != b"----" or not key.islower():
                return plain_get(key)
        try:
            return view[0](key)
        except (InvalidKey, TableCorrupt):
            return None

    return live_uuid_lookup


class FastPath:
    """Pure ASGI front: answers plain GET hits itself, passes all else to `api`."""

    def __init__(self, api: ASGIApp, state: State, max_body: int, body_seconds: float = BODY_SECONDS):
        self.api = api
        self.state = state
        self.max_body = max_body
        self.max_write_body = max(max_body, writes.MAX_WRITE_BODY)
        self.body_seconds = body_seconds

        # The closure itself is the ASGI app create_app hands to uvicorn: calling
        # an instance would add a coroutine layer per request (0.3 us).
        self.asgi = self._make_call()

    def _make_call(self) -> ASGIApp:
        """The hot path, as a closure over locals (no attribute lookups)."""
        api = self.api
        slow = self._slow
        state = self.state
        lookup = plain_lookup(state)
        plain = plain_headers
        prefix, cut = KEY_PREFIX, len(KEY_PREFIX)
        lookups = state.counts.lookups
        fast = state.counts.fast
        # On a root, every request first compares the head page's change
        # counter with the one this worker applied: one unpack, one compare
        # (kv/live.py); only when it moved does the worker catch up.
        live = state.live
        if live is not None:
            counter, head, seen, catch_up = COUNTER.unpack_from, live.head.mm, live.seen, live.catch_up
        as_text = (b"content-type", b"text/plain; charset=utf-8")
        clock = time.perf_counter
        buckets = metrics.LATENCY_BUCKETS
        first = buckets[0]
        where = bisect_left
        allows = state.guard.allows  # read tokens (kv/http/auth.py); None: none needed

        async def call(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await api(scope, receive, send)
            t0 = clock()
            if live is not None and counter(head, COUNTER_AT)[0] != seen[0]:
                catch_up()
            raw = scope["raw_path"]
            if raw[:cut] == prefix and scope["method"] == "GET" and not scope["query_string"] and plain(scope["headers"], allows):
                value = lookup(raw[cut:])
                if value is not None:
                    etag, generation = state.hit_headers  # read per request: they may change with the generation
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                etag,
                                generation,
                                (b"content-length", b"%d" % len(value)),
                                as_text if value.isascii() else (b"content-type", content_type(value).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": value})
                    lookups[0] += 1
                    took = clock() - t0
                    fast[0 if took <= first else where(buckets, took)] += 1  # nearly always the first bucket
                    return
            await slow(scope, receive, send, t0)

        return call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # for direct use; create_app returns self.asgi
        await self.asgi(scope, receive, send)

    async def _slow(self, scope: Scope, receive: Receive, send: Send, t0: float) -> None:
        route = label(scope["raw_path"], scope["path"])
        status = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            method = scope["method"]
            write = method in WRITE_METHODS and (route == WRITE_ROUTE.path or (route == KEY.path and method != "POST"))
            # Writes carry the write token, checked by the write routes; read tokens guard the rest.
            refusal = self.refusal(scope) or (None if write else self.state.guard.refusal(scope))
            if refusal is not None:
                return await _closing_if_body(scope, refusal)(scope, receive, send_counted)
            if write:
                return await self._write(scope, receive, send_counted, route, status)
            if route == KEY.path:
                # Keys route on the raw path: "%2F" is a slash inside the key,
                # which FastAPI, routing on the decoded path, would split on.
                if scope["method"] in BODY_METHODS:
                    body = await self._read_body(receive)  # bounded, and drained before the answer
                    if body is None:
                        status[0] = DISCONNECTED
                        return
                try:
                    if scope["method"] in KEY.served:
                        resp = key_from_scope(self.state, scope)
                    else:  # as FastAPI's 405 (kv/http/app.py http_error)
                        resp = problem(
                            405,
                            "Method not allowed",
                            f"{scope['method']} is not allowed on {scope['path'][:200]}",
                            headers={"Allow": ", ".join(KEY.served + (("PUT", "DELETE") if self.state.writer else ()))},
                        )
                except Exception:
                    log.exception("unexpected error on %s %s", scope["method"], KEY.path)
                    resp = problem(500, "Internal error", "see the server log")
                return await resp(scope, receive, send_counted)
            if scope["method"] in BODY_METHODS:
                # Read the body here, bounded, whatever the framing (chunked
                # bodies have no Content-Length), then hand it on.
                body = await self._read_body(receive)
                if body is None:
                    status[0] = DISCONNECTED
                    return
                if isinstance(body, Response):
                    return await _closing_if_body(scope, body)(scope, receive, send_counted)
                if route == BATCH.path and scope["method"] == "POST":
                    # Straight to the handler: FastAPI's routing and request
                    # objects cost more than looking up 100 keys.
                    try:
                        resp = batch_from_body(self.state, body)
                    except Exception:
                        log.exception("unexpected error on POST %s", BATCH.path)
                        resp = problem(500, "Internal error", "see the server log")
                    return await resp(scope, receive, send_counted)
                receive = _replay(body, receive)
            await self.api(scope, receive, send_counted)
        finally:
            self.state.counts.request(route, status[0], time.perf_counter() - t0)

    async def _write(self, scope: Scope, receive: Receive, send: Send, route: str, status: list) -> None:
        """PUT and DELETE /v1/keys/{key}, POST /v1/write (kv/http/writes.py):
        405 unless writable, then the token (before the body is read), then the body, then the write."""
        state = self.state
        body_follows = scope["method"] != "DELETE"
        refusal = writes.refusal(state, scope, route)
        if refusal is not None:
            return await _closing_if_body(scope, refusal)(scope, receive, send)
        body = b""
        if body_follows:
            read = await self._read_body(receive, self.max_write_body)
            if read is None:
                status[0] = DISCONNECTED
                return
            if isinstance(read, Response):
                return await _closing_if_body(scope, read)(scope, receive, send)
            body = read
        try:
            resp = await writes.dispatch(state, scope, route, body)
        except Exception:  # still an answer, as the api's handler gives
            log.exception("unexpected error on %s %s", scope["method"], route)
            resp = problem(500, "Internal error", "see the server log; the write may or may not have been committed")
        await resp(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        """The problem response for a request over a limit or without a Host; None when it is fine."""
        query = scope.get("query_string", b"")
        target = len(scope["raw_path"]) + (len(query) + 1 if query else 0)  # path, "?", query
        if target > MAX_PATH:
            return problem(414, "URI too long", f"request target is {target} bytes; the limit is {MAX_PATH}")
        headers = scope["headers"]
        if sum(len(n) + len(v) for n, v in headers) > MAX_HEADERS:
            return problem(431, "Request header fields too large", f"headers exceed {MAX_HEADERS} bytes")
        if len(headers) > MAX_HEADER_FIELDS:
            return problem(431, "Request header fields too large", f"{len(headers)} header fields; the limit is {MAX_HEADER_FIELDS}")
        if scope.get("http_version") == "1.1" and not any(name == b"host" for name, _ in headers):
            return problem(400, "Bad request", "an HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)")
        limit = self.max_write_body if scope["method"] in WRITE_METHODS and self.state.writer is not None else self.max_body
        for name, value in headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                return problem(
                    413, "Request body too large", f"Content-Length {value[:20].decode('latin-1')!r}; the limit is {limit} bytes"
                )
        return None

    async def _read_body(self, receive: Receive, limit: int | None = None) -> bytes | Response | None:
        """The whole request body; or the problem response when it is too large
        or too slow; or None when the client disconnected first."""
        limit = limit or self.max_body
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_seconds):  # a trickled body must not hold a slot forever
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    if len(body) > limit:
                        return problem(413, "Request body too large", f"the body exceeds {limit} bytes")
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            return problem(
                408,
                "Request timeout",
                f"the request body took longer than {self.body_seconds:g} s to arrive",
                headers={"connection": "close"},
            )


def _closing_if_body(scope: Scope, response: Response) -> Response:
    """A refusal answered before the request body was read says `Connection:
    close` (and uvicorn then closes): on a kept connection the unread body, or
    the body a client sends after `Expect: 100-continue` anyway, would be
    parsed as the next request, and the client's real next request lost in it."""
    for name, value in scope["headers"]:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            response.headers["connection"] = "close"
            from ..worker import close_lingering_after  # under gunicorn: close without a reset (kv/worker.py)

            close_lingering_after(scope)
            break
    return response


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = [False]

    async def replayed() -> Message:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
