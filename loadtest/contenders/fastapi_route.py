"""The same table lookup behind a plain FastAPI route (what kv's fast path beats).

KV_TABLE=path.kvt gunicorn -k uvicorn_worker.UvicornWorker -w 2 loadtest.contenders.fastapi_route:app
"""

import os

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse

import kv

table = kv.open_table(os.environ["KV_TABLE"])
app = FastAPI()


@app.get("/v1/keys/{key}", response_class=PlainTextResponse)
async def get_key(key: str):
    try:
        value = table.get(key)
    except kv.InvalidKey as e:
        raise HTTPException(400, str(e)) from None
    if value is None:
        raise HTTPException(404, "not found")
    return PlainTextResponse(value)
