"""The ceiling: a bare ASGI app that answers every request with a constant body.

gunicorn -k uvicorn_worker.UvicornWorker -w 2 loadtest.contenders.bare_asgi:app
"""

BODY = b"ssuujvmqq wha diatcawitc idmdfraey itvfpes zd"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(BODY)).encode())],
}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(START)
    await send(END)
