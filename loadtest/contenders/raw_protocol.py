"""The limit of Python HTTP on the machine: a plain asyncio protocol on uvloop
+ httptools doing kv's lookup, with nothing else (no ASGI, no gunicorn, no
token or size rules, no counters, no keep-alive timer).

    KV_TABLE=path.kvt python -m loadtest.contenders.raw_protocol --port 8000 [--workers 2]

Per request: httptools calls on_url and on_message_complete (no on_header
callback: headers are not looked at), `Table.get` on the raw key, and one
`transport.write` of a status line, `date` (rendered once a second, as
uvicorn does), kv's hit headers, content-length, content-type and the value.
A miss is a 404 with a constant body. HTTP/1.0 or `Connection: close` close
after the response. Pipelined requests are answered in order (each in its
callback). The workers are forked after the socket is bound and listening,
as gunicorn's are, so the kernel spreads connections the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from email.utils import formatdate

import httptools
import uvloop

import kv

PREFIX = b"/v1/keys/"
CUT = len(PREFIX)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 9\r\n\r\nnot found"


def serve(sock: socket.socket, table_path: str) -> None:
    table = kv.open_table(table_path)
    get = table.get
    invalid = kv.InvalidKey
    hit_headers = b'etag: "%s"\r\nx-kv-generation: %s\r\n' % (table.generation.encode(), table.generation.encode())
    head = [b""]

    def render_date() -> None:
        head[0] = b"HTTP/1.1 200 OK\r\ndate: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n" + hit_headers
        loop.call_later(1.0, render_date)

    class Protocol(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url")

        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url):
            self.url += url

        def on_message_complete(self):
            url, self.url = self.url, b""
            try:
                value = get(url[CUT:]) if url[:CUT] == PREFIX else None
            except invalid:
                value = None
            if value is None:
                out = NOT_FOUND
            else:
                out = b"".join((head[0], b"content-length: %d\r\ncontent-type: text/plain; charset=utf-8\r\n\r\n" % len(value), value))
            self.transport.write(out)
            if not self.parser.should_keep_alive():
                self.transport.close()

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    render_date()
    server = loop.run_until_complete(loop.create_server(Protocol, sock=sock, backlog=2048))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    table_path = os.environ["KV_TABLE"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.setblocking(False)
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            try:
                serve(sock, table_path)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
