"""The fast path and the FastAPI route give identical responses: status,
headers (in order) and body, for every kind of request to /v1/keys/{key}."""

import asyncio

import pytest

from conftest import write_records
from kv.app import create_app
from kv.build import build_table

KEY = "3479d894-3271-4935-88cf-a06f3cbb80a5"
BIN_KEY = "0cdfafb5-edb4-48a6-a7ec-5b1a75831f91"
UTF_KEY = "6fa459ea-ee8a-4ca4-894e-db77e160355e"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast")
    data = write_records(d / "f.data", [(KEY, b"this is a value"), (BIN_KEY, b"\xff\x00"), (UTF_KEY, "\u00e9t\u00e9".encode())])
    build_table(data, d / "f.kvt")
    return create_app(d / "f.kvt")


def call(asgi, method: str, path: str, headers=()) -> tuple[int, list, bytes]:
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"test")] + [(k.encode(), v.encode()) for k, v in headers],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(asgi(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], list(start["headers"]), body


CASES = [
    ("hit", "GET", f"/v1/keys/{KEY}", ()),
    ("binary hit", "GET", f"/v1/keys/{BIN_KEY}", ()),
    ("utf-8 hit", "GET", f"/v1/keys/{UTF_KEY}", ()),
    ("upper-case hit", "GET", f"/v1/keys/{KEY.upper()}", ()),
    ("miss", "GET", "/v1/keys/00000000-0000-4000-8000-000000000000", ()),
    ("malformed", "GET", "/v1/keys/not-a-key", ()),
    ("head", "HEAD", f"/v1/keys/{KEY}", ()),
    ("json", "GET", f"/v1/keys/{KEY}", (("accept", "application/json"),)),
    ("json in any case", "GET", f"/v1/keys/{KEY}", (("accept", "Application/JSON"),)),
    ("304", "GET", f"/v1/keys/{KEY}", (("if-none-match", "ETAG"),)),
    ("weak 304", "GET", f"/v1/keys/{KEY}", (("if-none-match", "W/ETAG"),)),
    ("json refused", "GET", f"/v1/keys/{KEY}", (("accept", "application/json;q=0"),)),
]


@pytest.mark.parametrize("name,method,path,headers", CASES, ids=[c[0] for c in CASES])
def test_fast_path_and_fastapi_route_answer_identically(app, name, method, path, headers):
    headers = tuple((k, v.replace("ETAG", app.state.etag)) for k, v in headers)
    fast = call(app, method, path, headers)
    route = call(app.api, method, path, headers)
    assert fast == route


def test_plain_hits_take_the_fast_path(app):
    before = sum(app.state.counts.fast)
    status, _, body = call(app, "GET", f"/v1/keys/{KEY}")
    assert (status, body) == (200, b"this is a value")
    assert sum(app.state.counts.fast) == before + 1


@pytest.mark.parametrize("headers", [(("accept", "application/json"),), (("accept", "APPLICATION/JSON"),),
                                     (("if-none-match", '"x"'),), (("x-big", "v" * 2000),)])
def test_json_conditional_and_oversized_requests_take_the_full_path(app, headers):
    before = sum(app.state.counts.fast)
    call(app, "GET", f"/v1/keys/{KEY}", headers)
    assert sum(app.state.counts.fast) == before
