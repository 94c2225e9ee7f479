"""The fast path and the FastAPI route give identical responses: status,
headers (in order) and body, for every kind of request to /v1/keys/{key},
on UUID tables (format 1) and string tables (format 2)."""

import asyncio
from urllib.parse import unquote

import pytest
from conftest import write_records
from reference_writer import reference_table

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
    """`path` is the raw (percent-encoded) path, as a server receives it."""
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")] + [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
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


def test_plain_hits_take_the_fast_path(app, held_flushes):
    before = sum(app.state.counts.fast)
    status, _, body = call(app, "GET", f"/v1/keys/{KEY}")
    assert (status, body) == (200, b"this is a value")
    assert sum(app.state.counts.fast) == before + 1


@pytest.mark.parametrize(
    "headers", [(("accept", "application/json"),), (("accept", "APPLICATION/JSON"),), (("if-none-match", '"x"'),), (("x-big", "v" * 2000),)]
)
def test_json_conditional_and_oversized_requests_take_the_full_path(app, headers):
    before = sum(app.state.counts.fast)
    call(app, "GET", f"/v1/keys/{KEY}", headers)
    assert sum(app.state.counts.fast) == before


# -- version 1 (UUID) answers are byte for byte what they were before string keys -------------


def test_uuid_answers_are_byte_identical_to_before_string_keys(app):
    g = app.state.table.generation
    assert call(app, "GET", f"/v1/keys/{KEY}") == (
        200,
        [
            (b"etag", f'"{g}"'.encode()),
            (b"x-kv-generation", g.encode()),
            (b"content-length", b"15"),
            (b"content-type", b"text/plain; charset=utf-8"),
        ],
        b"this is a value",
    )
    status, headers, body = call(app, "GET", "/v1/keys/00000000-0000-4000-8000-000000000000")
    assert status == 404 and body == (
        b'{"type":"about:blank","title":"Not found","status":404,"detail":"key 00000000-0000-4000-8000-000000000000 '
        b"is not in this table (generation " + g.encode() + b')"}'
    )
    status, _, body = call(app, "GET", "/v1/keys/not-a-key")
    assert status == 400 and body == (
        b'{"type":"about:blank","title":"Invalid key","status":400,"detail":"key \'not-a-key\' is 9 characters long; '
        b'expected 36 (8-4-4-4-12 hex digits with hyphens) or 32 (hex digits only)","key":"not-a-key"}'
    )


def test_a_percent_encoded_uuid_is_the_same_key(app):
    encoded = "".join(f"%{b:02x}" for b in KEY.encode())
    assert call(app, "GET", f"/v1/keys/{encoded}")[2] == b"this is a value"


# -- string tables ----------------------------------------------------------------------------

STRING_RECORDS = [
    ("user:42", b"a value"),
    ("a/b c", b"\xff\x00\n"),
    ("\u00e9t\u00e9 \U0001f511", "\u00e9t\u00e9".encode()),
    ("tab\tkey", b"t"),
    ("k" * 1024, b"long"),
]


@pytest.fixture(scope="module")
def string_app(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "s.kvt"
    path.write_bytes(reference_table([(k.encode(), v) for k, v in STRING_RECORDS], kind="string", meta={"format": 2, "key_kind": "string"}))
    return create_app(path)


def _enc(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


STRING_CASES = [
    ("plain hit", "GET", "/v1/keys/user:42", ()),
    ("encoded hit", "GET", "/v1/keys/user%3A42", ()),
    ("slash and space", "GET", f"/v1/keys/{_enc('a/b c')}", ()),
    ("utf-8 and emoji", "GET", f"/v1/keys/{_enc(STRING_RECORDS[2][0])}", ()),
    ("tab", "GET", f"/v1/keys/{_enc('tab' + chr(9) + 'key')}", ()),
    ("1024 bytes", "GET", "/v1/keys/" + "%6B" * 1024, ()),
    ("upper case is another key", "GET", "/v1/keys/USER:42", ()),
    ("miss", "GET", "/v1/keys/nobody", ()),
    ("not utf-8", "GET", "/v1/keys/%FF", ()),
    ("overlong", "GET", "/v1/keys/" + "k" * 1025, ()),
    ("head", "HEAD", "/v1/keys/user%3A42", ()),
    ("json", "GET", f"/v1/keys/{_enc('a/b c')}", (("accept", "application/json"),)),
    ("304", "GET", "/v1/keys/user:42", (("if-none-match", "ETAG"),)),
]


@pytest.mark.parametrize("name,method,path,headers", STRING_CASES, ids=[c[0] for c in STRING_CASES])
def test_fast_path_and_key_handler_answer_identically_for_string_keys(string_app, name, method, path, headers):
    """FastAPI's route cannot see a key holding "/" (it routes on the decoded
    path), so the reference is the key handler called directly, as FastAPI calls it."""
    from kv.http.handlers import key_from_scope

    headers = tuple((k, v.replace("ETAG", string_app.state.etag)) for k, v in headers)
    fast = call(string_app, method, path, headers)
    scope_headers = [(b"host", b"test")] + [(k.encode(), v.encode()) for k, v in headers]
    handler = call(
        key_from_scope(string_app.state, {"raw_path": path.encode(), "path": unquote(path), "method": method, "headers": scope_headers}),
        method,
        path,
        headers,
    )
    assert fast == handler
    if "/" not in unquote(path)[len("/v1/keys/") :] and "%" not in path:
        assert fast == call(string_app.api, method, path, headers)  # and FastAPI's own route, where it can route


def test_plain_string_hits_take_the_fast_path(string_app):
    for path in ("/v1/keys/user:42", "/v1/keys/user%3A42", "/v1/keys/" + "%6B" * 1024):
        before = sum(string_app.state.counts.fast)
        assert call(string_app, "GET", path)[0] == 200
        assert sum(string_app.state.counts.fast) == before + 1, path


def test_openapi_keeps_the_uuid_pattern_for_uuid_tables_only(app, string_app):
    from kv.http.openapi import KEY_PATTERN

    def key_param(a):
        return a.api.openapi()["paths"]["/v1/keys/{key}"]["get"]["parameters"][0]["schema"]

    assert key_param(app)["pattern"] == KEY_PATTERN
    assert "pattern" not in key_param(string_app)


def test_the_quick_parse_with_tokens_answers_exactly_the_heads_plain_headers_allows():
    """kv/http/protocol.py answers Host + Authorization heads without calling
    plain_headers (QUICK_TOKEN, or QUICK's fields): it must decide as
    plain_headers does, token, case, sizes and other headers included."""
    from types import SimpleNamespace

    from kv.http.auth import bearer_check
    from kv.http.fastpath import FAST_MAX_FIELD, plain_headers
    from kv.http.protocol import _FIELD, QUICK, _quick_answerer

    allows = bearer_check([b"tok-12345678"])
    answered: list[bytes] = []
    quick = _quick_answerer(lambda key: b"v", allows, lambda conn, t0, value, head_only, keep_alive: answered.append(value))
    conn = SimpleNamespace(
        flow=SimpleNamespace(read_paused=False, write_paused=False),
        access_log=False,
        limit_concurrency=None,
        transport=SimpleNamespace(is_closing=lambda: False),
    )
    fields = [
        b"Authorization: Bearer tok-12345678",
        b"authorization:Bearer tok-12345678",
        b"AUTHORIZATION: Bearer tok-12345678",
        b"Authorization: bearer tok-12345678",
        b"Authorization: Bearer tok-1234567",
        b"Authorization: Bearer tok-12345678x",
        b"Authorization: Bearer " + b"t" * FAST_MAX_FIELD,
        b"Authorization: Bearer tok-12345678\r\nAccept: application/json",
        b"Authorization: Bearer tok-12345678\r\nX-A: b",
        b"X-A: b\r\nAuthorization: Bearer tok-12345678",
        b"Authorizations: Bearer tok-12345678",
        b"",
    ]
    outcomes = []
    for host in (b"h", b"h h", b"h" * FAST_MAX_FIELD):  # QUICK_TOKEN, QUICK (a space), too long
        for field in fields:
            head = b"GET /v1/keys/k HTTP/1.1\r\nHost: " + host + b"\r\n" + (field + b"\r\n" if field else b"") + b"\r\n"
            m = QUICK.fullmatch(head)
            assert m is not None, head
            expected = plain_headers([(b"host", m[3])] + [(n.lower(), v) for n, v in _FIELD.findall(m[4])], allows)
            answered.clear()
            assert quick(conn, head) is expected and bool(answered) is expected, field
            outcomes.append(expected)
    assert outcomes.count(True) == 10 and outcomes.count(False) == len(outcomes) - 10
