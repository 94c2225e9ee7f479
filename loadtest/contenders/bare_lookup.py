"""A bare ASGI app doing the same mmap table lookup as kv, with nothing else:
no validation of the 404/400 distinction beyond Table.get, no metrics, no ETag.

KV_TABLE=path.kvt gunicorn -k uvicorn_worker.UvicornWorker -w 2 loadtest.contenders.bare_lookup:app
"""

import os

import kv

_table = kv.open_table(os.environ["KV_TABLE"])
_get = _table.get
CT = [(b"content-type", b"text/plain; charset=utf-8")]
PREFIX = len("/v1/keys/")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        value = _get(scope["raw_path"][PREFIX:])
    except kv.InvalidKey:
        value = None
    if value is None:
        await send({"type": "http.response.start", "status": 404, "headers": CT})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": CT + [(b"content-length", b"%d" % len(value))]})
    await send({"type": "http.response.body", "body": value})
