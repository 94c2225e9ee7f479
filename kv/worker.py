"""The gunicorn worker: uvicorn (uvloop, httptools) with two connection rules
uvicorn lacks, both about when the server closes a keep-alive connection.

1. Draining without resets. On reload or stop, uvicorn closes every idle
   keep-alive connection at once. A client that sent its next request just as
   the close went out gets "connection reset by peer" (the kernel answers
   unread data on a closed socket with RST), a failure a reload should never
   cause. Here an idle connection stays open through the drain: its next
   request is answered with `Connection: close` (race-free: the client knows
   not to reuse it), and one that stays silent is closed when its ordinary
   keep-alive timeout would close it anyway, exactly the close a client faces
   on any idle connection. A worker therefore exits at most `keepalive`
   seconds after a reload, inside `graceful_timeout`: `kv serve` refuses a
   keepalive that is not below graceful_timeout (kv.serve.check_keepalive).

2. Silent and slow clients are closed. uvicorn times out a connection only
   after a response; one that connects and never sends a request, or sends a
   request head a byte at a time, would hold a file descriptor forever (a
   slowloris client needs nothing more). Here the keep-alive timeout (gunicorn
   `keepalive`, 5 s) also runs from the moment a connection is accepted, and a
   sweep every `keepalive` seconds closes a connection that was receiving a
   request head at the last sweep and still has not completed it: a head must
   be complete within one to two `keepalive` periods of its first byte.

3. One close per listening socket. uvicorn-worker (0.4) hands uvicorn
   gunicorn's socket wrappers; uvloop closes a server's socket itself, then
   calls the wrapper's close(), which closes the same descriptor again and
   logs "Error while closing socket [Errno 9] Bad file descriptor" at every
   worker stop (and a descriptor closed twice could, in between, have been
   reused). Handed the plain socket objects, uvloop detaches them instead.

4. Request heads are bounded while they arrive. httptools hands uvicorn a URL
   or header only when it is complete (and concatenates its pieces meanwhile,
   a cost that grows with the square of its size); the size limits of
   kv/http/fastpath.py apply only to a complete head. Here data_received
   counts the bytes received since the current request head started, and
   past HEAD_LIMIT (64 KiB, over MAX_PATH + MAX_HEADERS) answers 414 (when the
   URL is what grew) or 431 and closes: memory and parse time stay bounded.
   The close lingers (close_lingering), as does the close after a refused
   body (kv/http/fastpath.py asks for it with close_lingering_after): the
   client's further bytes are read and dropped, up to 1 MiB or 2 s, so that
   it reads the answer instead of a reset.

5. A paused worker answers what arrived meanwhile. After a SIGSTOP of
   `keepalive` seconds or more, the idle timer fires on SIGCONT before the
   request that arrived during the pause is read, and would reset it. The
   timer re-arms instead when the socket holds unread bytes.

6. Workers die with their master. PR_SET_PDEATHSIG makes the kernel send a
   worker SIGTERM when the master dies (even by SIGKILL), and the periodic
   notify checks the parent pid as gunicorn's own workers do: orphans would
   keep the port and a restarted server could not bind it.

7. A worker says when it serves: its first notify (gunicorn's heartbeat file)
   comes from uvicorn's first tick, after its sockets accept. The master
   (kv/serve.py, KVArbiter) waits for that on reload before it stops the old
   workers, so no connection waits for a worker that is still booting.

8. Plain hits are answered in the protocol. `on_headers_complete`, where
   uvicorn would start the ASGI task, first asks kv/http/protocol.py to
   answer the request: a GET or HEAD hit on /v1/keys/{key} with nothing in
   flight before it is written to the transport there, byte for byte the
   ASGI path's response, without a scope (on_message_begin leaves it to
   on_headers_complete, which builds it with uvicorn's own code for the
   requests uvicorn runs), cycle, task or `send`. Before that, data_received
   hands a read that is exactly one such request head (the common case: a
   client waiting for each answer) to protocol.QUICK's parser when httptools
   stands between requests (`_between`, set by on_message_complete, cleared
   by on_message_begin) and nothing is in flight: no parser callback runs at
   all, httptools never sees the request and stays at the start of the next.
   Everything else (misses, other routes, conditional or JSON requests, a
   missing or wrong token, pipelined requests behind one in flight) goes on
   to uvicorn unchanged. Rules 1, 2, 4 and 5 hold on this path: the drain's
   `Connection: close` is in the default headers it writes (and it closes
   after); `answered` counts its requests, so the head limit and the sweep
   see each as they see a new cycle; its keep-alive timer
   (protocol.IdleTimer) ends in this class's timeout_keep_alive_handler.

Rules 1 and 2 stay off the per-request path: the drain adds `Connection:
close` to the worker's default response headers, and the head check is the
periodic sweep. Rule 4 adds a few comparisons per read; rule 8 overrides
two parser callbacks and skips the parser for one request form, to make
requests cheaper.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import os
import signal
import struct
import sys
import termios
from collections.abc import MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# Bytes of one request head (request line and headers) while it arrives; over
# kv/http/fastpath.py's MAX_PATH + MAX_HEADERS with room for separators
# (tests/integration/test_security.py checks). Not imported from there: the master loads
# this module, and needs no FastAPI.
HEAD_LIMIT = 64 * 1024
LINGER_BYTES, LINGER_SECONDS = 1 << 20, 2.0  # read and dropped after refusing a head, before the close
_NOT_SEEN = object()


class KVHttpProtocol(HttpToolsProtocol):
    _head_seen: Any = _NOT_SEEN  # (cycle, answered) after which a partial head was last seen
    _sweeping: set = set()  # the server states this process sweeps (one per worker)
    _states: list = []  # and those states
    _head_bytes = 0  # bytes of the request head now arriving (rule 4)
    _lingering = False  # closing: what arrives is dropped (close_lingering)
    _linger_budget = LINGER_BYTES
    _answer = None  # rule 8: kv/http/protocol.py's answerer of this worker's app; None: not kv's app
    _quick = None  # and its answer to a read that is one whole request head (protocol.QUICK)
    _between = True  # httptools stands between requests: no part of one is buffered in it
    answered = 0  # requests answered by it on this connection (rules 2 and 4 see each as a completed request)
    idle_timer = None  # its keep-alive timer (kv/http/protocol.py, IdleTimer), made at the first answer

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # after a refusal: read and drop (uvloop keeps this bound method, so a flag, not a swap)
            self._linger_budget -= len(data)
            if self._linger_budget < 0 and not self.transport.is_closing():
                self.transport.close()
            return
        cycle, answered = self.cycle, self.answered
        quick = self._quick
        if quick is not None and self._between and (cycle is None or (cycle.response_complete and cycle.keep_alive)):
            # Rule 8: a read that is one plain hit's whole head, between requests, is answered without httptools.
            task = self.timeout_keep_alive_task
            if task is not None and task is not self.idle_timer:  # cancelled as uvicorn's data_received does; the
                task.cancel()  # idle timer is re-armed by the answer, or cancelled by uvicorn's data_received below
                self.timeout_keep_alive_task = None
            if quick(self, data):
                self._head_bytes = 0
                return
        # Rule 4: a few comparisons and one add per read, not per request callback.
        in_head = cycle is None or not cycle.more_body or cycle.response_complete  # not inside a body
        HttpToolsProtocol.data_received(self, data)  # not super(): one object less per read
        if self.cycle is not cycle or self.answered != answered or not in_head:  # a head completed in this read, or it carried a body
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > HEAD_LIMIT:
            self._refuse_head()

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        from .http.fastpath import MAX_PATH

        if len(self.url) > MAX_PATH:
            status, title, detail = 414, "URI too long", f"request target exceeds {MAX_PATH} bytes"
        else:
            status, title, detail = 431, "Request header fields too large", f"request head exceeds {HEAD_LIMIT} bytes"
        body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            if name != b"connection":
                head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/problem+json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.close_lingering()

    def close_lingering(self) -> None:
        """Close without destroying what was just written. Closing with the
        client's bytes unread makes the kernel send RST, which can discard
        the answer before the client reads it (a client still sending a body
        the server refused). So, as nginx's lingering_close: half-close, read
        and drop what still comes (at most LINGER_BYTES, LINGER_SECONDS), then
        close. Over TLS (no half-close): close."""
        transport = self.transport
        self.pipeline.clear()  # nothing more is answered on this connection
        if transport.is_closing():
            return
        self._lingering = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def timeout_keep_alive_handler(self) -> None:
        # Rule 5: bytes waiting in the socket are a request to answer, not idleness.
        self.timeout_keep_alive_task = None
        if not self.transport.is_closing() and _unread_bytes(self.transport):
            self._arm_idle_timer()  # data_received, which runs next, cancels it
            return
        super().timeout_keep_alive_handler()

    def on_message_begin(self) -> None:
        # Rule 8: what uvicorn's on_message_begin resets, without the ASGI
        # scope (a dict and a copy of the app state, 1 us): on_headers_complete
        # builds it for the requests uvicorn runs.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._between = False

    def on_message_complete(self) -> None:
        # Rule 8: httptools stands between requests again (at the start of
        # the next when the request kept the connection alive, and then so
        # does its cycle's keep_alive: data_received checks both).
        self._between = True
        HttpToolsProtocol.on_message_complete(self)

    def on_headers_complete(self) -> None:
        # Rule 8: a plain hit is answered here; uvicorn starts the ASGI task otherwise.
        answer = self._answer
        if answer is None or not answer(self):
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            HttpToolsProtocol.on_message_begin(self)  # uvicorn's own scope for this request, built now
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
            HttpToolsProtocol.on_headers_complete(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._answer = answer = _answerer(self.app)
        self._quick = getattr(answer, "quick", None)
        self._arm_idle_timer()
        state = self.server_state
        if id(state) not in KVHttpProtocol._sweeping:
            KVHttpProtocol._sweeping.add(id(state))
            KVHttpProtocol._states.append(state)
            self.loop.call_later(self.timeout_keep_alive, _sweep, self.loop, state, self.timeout_keep_alive)

    def _arm_idle_timer(self) -> None:
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _check_head(self) -> None:
        """Between requests, a cancelled idle timer means bytes of a next
        request head arrived (data_received cancels it; a complete head starts
        a new cycle). Seen so at two sweeps in a row, with no new cycle: close."""
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and self.timeout_keep_alive_task is None and not self.transport.is_closing():
            seen = (cycle, self.answered)  # rule 8: a request answered in the protocol leaves the cycle as it was
            if self._head_seen == seen:
                self.transport.close()
            else:
                self._head_seen = seen
        else:
            self._head_seen = _NOT_SEEN

    def shutdown(self) -> None:
        # Responses from now on say `Connection: close` (uvicorn then closes
        # after them); the server's clock no longer refreshes these headers.
        state = self.server_state
        if _CLOSE not in state.default_headers:
            state.default_headers = [*state.default_headers, _CLOSE]
        if self.cycle is None or self.cycle.response_complete:
            self._arm_idle_timer()  # idle: wait for a last request or the ordinary timeout
        else:
            self.cycle.keep_alive = False  # in flight: this response says Connection: close


_CLOSE = (b"connection", b"close")


def _answerer(app: Any) -> Any:
    """Rule 8's answerer for `app` (kv/http/protocol.py, imported here and
    not at the top: the master loads this module, and needs no FastAPI)."""
    from .http.protocol import answerer_for

    return answerer_for(app)


def _unread_bytes(transport: asyncio.Transport) -> int:
    """Bytes the kernel holds for this connection that nothing has read yet (FIONREAD)."""
    sock = transport.get_extra_info("socket")
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    return struct.unpack("i", buf)[0]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent pid check in callback_notify remains


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, period: float) -> None:
    for conn in list(state.connections):
        if isinstance(conn, KVHttpProtocol):
            conn._check_head()
    loop.call_later(period, _sweep, loop, state, period)


class _CloseLingering:
    """What a refused request's cycle sees as its transport: writes go
    through; its close() is the connection's lingering close."""

    def __init__(self, conn: KVHttpProtocol):
        self._conn = conn
        self._transport = conn.transport

    def close(self) -> None:
        self._conn.close_lingering()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def close_lingering_after(scope: MutableMapping[str, Any]) -> None:
    """Make the connection of the request `scope` close lingering (see
    KVHttpProtocol.close_lingering) when its response is done. kv/http/fastpath.py
    calls this when it refuses a body it has not read (413, 408): only then,
    so no request pays for it. The cycle's transport attribute is swapped for
    that one response (uvicorn 0.3x: RequestResponseCycle.transport is what
    its send() writes to and closes)."""
    for state in KVHttpProtocol._states:
        for conn in state.connections:
            cycle = getattr(conn, "cycle", None)
            if cycle is not None and cycle.scope is scope and isinstance(conn, KVHttpProtocol):
                cycle.transport = _CloseLingering(conn)
                return


class KVWorker(UvicornWorker):
    # No `server: uvicorn` header: it tells a scanner what to try, and costs
    # every response a header (Date stays: HTTP requires it). No proxy-headers
    # middleware: it rewrites scope["client"] from X-Forwarded-For, which kv
    # never reads (no access log, no per-client rule), and it is one more
    # coroutine layer on every request (about 0.5 us of the 13 us uvicorn
    # spends on a request, measured in process).
    CONFIG_KWARGS = {"loop": "uvloop", "http": KVHttpProtocol, "ws": "none", "server_header": False, "proxy_headers": False}

    def init_process(self) -> None:
        # Rule 6: the master may have died between fork and here.
        die_with_parent()
        if os.getppid() != self.ppid:
            sys.exit(0)
        super().init_process()

    async def _serve(self) -> None:
        # Rule 3 above: uvicorn gets the sockets, not gunicorn's wrappers (uvicorn-worker 0.4, uvloop 0.23).
        self.sockets: list[Any] = [getattr(s, "sock", s) for s in self.sockets]
        await super()._serve()

    async def callback_notify(self) -> None:
        # uvicorn calls this on its first tick (rule 7: serving) and every
        # `timeout / 2` seconds after; gunicorn's sync workers check the
        # parent pid at each heartbeat, uvicorn-worker (0.4) does not (rule 6).
        if os.getppid() != self.ppid:
            self.log.info("Parent changed, shutting down: %s", self)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.notify()
