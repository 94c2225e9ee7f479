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
   seconds after a reload, well inside `graceful_timeout`.

2. Silent and slow clients are closed. uvicorn times out a connection only
   after a response; one that connects and never sends a request, or sends a
   request head a byte at a time, would hold a file descriptor forever (a
   slowloris client needs nothing more). Here the keep-alive timeout (gunicorn
   `keepalive`, 5 s) also runs from the moment a connection is accepted, and a
   request head must be complete within it of its first byte.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


class KVHttpProtocol(HttpToolsProtocol):
    draining = False
    _head_deadline: float | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        awaiting = self.cycle is None or self.cycle.response_complete
        super().data_received(data)  # cancels the idle timer
        if awaiting and (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            # Part of a request head arrived: the rest must follow in time.
            if self._head_deadline is None:
                self._head_deadline = self.loop.time() + self.timeout_keep_alive
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_at(self._head_deadline, self.timeout_keep_alive_handler)
        else:
            self._head_deadline = None

    def shutdown(self) -> None:
        self.draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._arm_idle_timer()  # idle: wait for a last request or the ordinary timeout
        else:
            self.cycle.keep_alive = False  # in flight: this response says Connection: close

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


class KVWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": KVHttpProtocol, "ws": "none"}
