"""The typical solution: FastAPI loading the whole data file into a Python dict.
Run the way such solutions are run, one uvicorn process:

KV_DATA=path.data uvicorn loadtest.contenders.fastapi_dict:app --port 8000
"""

import os

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse

data: dict[str, bytes] = {}
with open(os.environ["KV_DATA"], "rb") as f:
    for line in f:
        k, _, v = line.rstrip(b"\n").partition(b" ")
        data[k.decode()] = v

app = FastAPI()


@app.get("/v1/keys/{key}", response_class=PlainTextResponse)
async def get_key(key: str):
    value = data.get(key)
    if value is None:
        raise HTTPException(404, "not found")
    return PlainTextResponse(value)
