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

The first two rules stay off the per-request path (no method of the protocol that runs
for every request is overridden): the drain adds `Connection: close` to the
worker's default response headers, and the head check is the periodic sweep.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


_NOT_SEEN = object()


class KVHttpProtocol(HttpToolsProtocol):
    _head_seen = _NOT_SEEN  # the cycle after which a partial head was last seen
    _sweeping: set = set()  # the server states this process sweeps (one per worker)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()
        state = self.server_state
        if id(state) not in KVHttpProtocol._sweeping:
            KVHttpProtocol._sweeping.add(id(state))
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
            if self._head_seen is cycle:
                self.transport.close()
            else:
                self._head_seen = cycle
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


def _sweep(loop, state, period: float) -> None:
    for conn in list(state.connections):
        if isinstance(conn, KVHttpProtocol):
            conn._check_head()
    loop.call_later(period, _sweep, loop, state, period)


class KVWorker(UvicornWorker):
    # No `server: uvicorn` header: it tells a scanner what to try, and costs
    # every response a header (Date stays: HTTP requires it). No proxy-headers
    # middleware: it rewrites scope["client"] from X-Forwarded-For, which kv
    # never reads (no access log, no per-client rule), and it is one more
    # coroutine layer on every request (about 0.5 us of the 13 us uvicorn
    # spends on a request, measured in process).
    CONFIG_KWARGS = {"loop": "uvloop", "http": KVHttpProtocol, "ws": "none", "server_header": False, "proxy_headers": False}

    async def _serve(self) -> None:
        # Rule 3 above: uvicorn gets the sockets, not gunicorn's wrappers (uvicorn-worker 0.4, uvloop 0.23).
        self.sockets = [getattr(s, "sock", s) for s in self.sockets]
        await super()._serve()
