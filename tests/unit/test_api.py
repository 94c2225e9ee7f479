"""The HTTP API's behaviour, in process (FastAPI TestClient over the full app,
fast path included)."""

import asyncio
import json
import time
import uuid

import pytest
from conftest import write_records
from fastapi.testclient import TestClient

from kv.app import create_app
from kv.build import build_table
from kv.http.fastpath import MAX_PATH
from kv.http.throttle import RENDER_BURST, RENDER_SECONDS

HIT = "3479d894-3271-4935-88cf-a06f3cbb80a5"
NUMBER = "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"
BINARY = "0cdfafb5-edb4-48a6-a7ec-5b1a75831f91"
EMPTY = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
UNICODE = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
ABSENT = "00000000-0000-4000-8000-000000000000"
RECORDS = [
    (HIT, b"this is a value"),
    (NUMBER, b"1234"),
    (BINARY, b"\xff\xfe\x00 raw"),
    (EMPTY, b""),
    (UNICODE, "caf\u00e9 \u2603".encode()),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    data = write_records(d / "api.data", RECORDS)
    build_table(data, d / "api.kvt")
    return d / "api.kvt"


@pytest.fixture(scope="module")
def app(table):
    return create_app(table, max_batch=10)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def test_hit_returns_raw_value_as_text(client, app):
    r = client.get(f"/v1/keys/{HIT}")
    assert r.status_code == 200
    assert r.content == b"this is a value"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-kv-generation"] == app.state.table.generation
    assert r.headers["etag"] == f'"{app.state.table.generation}"'


def test_non_utf8_value_is_octet_stream(client):
    r = client.get(f"/v1/keys/{BINARY}")
    assert r.status_code == 200
    assert r.content == b"\xff\xfe\x00 raw"
    assert r.headers["content-type"] == "application/octet-stream"


def test_utf8_value_is_text(client):
    r = client.get(f"/v1/keys/{UNICODE}")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "caf\u00e9 \u2603"


def test_empty_value_is_an_empty_200(client):
    r = client.get(f"/v1/keys/{EMPTY}")
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("form", [HIT.upper(), HIT.replace("-", ""), HIT.replace("-", "").upper()])
def test_other_key_forms_find_the_same_value(client, form):
    r = client.get(f"/v1/keys/{form}")
    assert r.status_code == 200 and r.content == b"this is a value"


def test_json_when_asked(client):
    r = client.get(f"/v1/keys/{NUMBER}", headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"key": NUMBER, "value": "1234"}


def test_json_of_non_utf8_value_is_base64(client):
    r = client.get(f"/v1/keys/{BINARY}", headers={"Accept": "application/json"})
    assert r.json() == {"key": BINARY, "value_base64": "//4AIHJhdw=="}


def test_head_has_headers_and_no_body(client):
    r = client.head(f"/v1/keys/{HIT}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(b"this is a value"))


def test_if_none_match_with_current_etag_gives_304(client):
    etag = client.get(f"/v1/keys/{HIT}").headers["etag"]
    r = client.get(f"/v1/keys/{HIT}", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag


def test_if_none_match_with_other_etag_gives_the_value(client):
    r = client.get(f"/v1/keys/{HIT}", headers={"If-None-Match": '"0000000000000000"'})
    assert r.status_code == 200 and r.content == b"this is a value"


@pytest.mark.parametrize("header", ["W/ETAG", '"0000000000000000", ETAG', "*"])
def test_if_none_match_weak_listed_or_star_gives_304(client, header):
    etag = client.get(f"/v1/keys/{HIT}").headers["etag"]
    r = client.get(f"/v1/keys/{HIT}", headers={"If-None-Match": header.replace("ETAG", etag)})
    assert r.status_code == 304


@pytest.mark.parametrize(
    "accept,json_expected",
    [
        ("application/json", True),
        ("application/json, */*;q=0.5", True),
        ("text/plain;q=0.5, application/json", True),
        ("application/json;q=0", False),
        ("*/*;q=0.8, application/json;q=0.1", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("application/jsonx", False),
    ],
)
def test_json_only_when_accept_ranks_it_first(client, accept, json_expected):
    r = client.get(f"/v1/keys/{HIT}", headers={"Accept": accept})
    assert r.status_code == 200
    if json_expected:
        assert r.json() == {"key": HIT, "value": "this is a value"}
    else:
        assert r.content == b"this is a value" and r.headers["content-type"].startswith("text/plain")


def test_absent_key_is_404_problem(client):
    r = client.get(f"/v1/keys/{ABSENT}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 404 and ABSENT in body["detail"]


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "3479d894-3271-4935-88cf-a06f3cbb80a",
        "3479d894-3271-4935-88cf-a06f3cbb80aZ",
        "3479d894_3271_4935_88cf_a06f3cbb80a5",
        "caf\u00e9",
        "x" * 300,
    ],
)
def test_malformed_key_is_400_problem_saying_why(client, bad):
    r = client.get(f"/v1/keys/{bad}")
    assert r.status_code == 400
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["title"] == "Invalid key" and body["detail"]


def test_batch_returns_values_and_missing(client, app):
    r = client.post("/v1/batch", json={"keys": [HIT, ABSENT, NUMBER.upper()]})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "generation": app.state.table.generation,
        "values": {HIT: "this is a value", NUMBER.upper(): "1234"},
        "missing": [ABSENT],
    }


def test_batch_non_utf8_values_come_base64(client):
    body = client.post("/v1/batch", json={"keys": [BINARY]}).json()
    assert body["values_base64"] == {BINARY: "//4AIHJhdw=="} and body["values"] == {}


def test_batch_names_malformed_keys(client):
    r = client.post("/v1/batch", json={"keys": [HIT, "bad-key", "also bad"]})
    assert r.status_code == 400
    body = r.json()
    assert [i["key"] for i in body["invalid"]] == ["bad-key", "also bad"]


def test_batch_over_the_limit_is_413(client):
    r = client.post("/v1/batch", json={"keys": [str(uuid.uuid4()) for _ in range(11)]})
    assert r.status_code == 413
    assert "at most 10" in r.json()["detail"]


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"keys": "x"}', b'{"keys": [1, 2]}', b"", b'{"key": []}'])
def test_batch_bad_body_is_400(client, body):
    r = client.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


def test_batch_huge_body_is_413(client):
    r = client.post("/v1/batch", content=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_batch_body_without_content_length_is_limited(client):
    def chunks():
        for _ in range(64):
            yield b"x" * 65536

    r = client.post("/v1/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_stats_counts_keys_and_lookups(client):
    before = client.get("/v1/stats").json()
    client.get(f"/v1/keys/{HIT}")
    client.get(f"/v1/keys/{ABSENT}")
    client.get("/v1/keys/bad")
    after = client.get("/v1/stats").json()
    assert after["keys"] == len(RECORDS)
    assert after["value_bytes"] == sum(len(v) for _, v in RECORDS)
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"], after["invalid_keys"] - before["invalid_keys"]) == (1, 1, 1)


def test_health_and_readiness(client, app):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["generation"] == app.state.table.generation


def test_wrong_method_is_405_problem(client):
    r = client.delete(f"/v1/keys/{HIT}")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"


def test_unknown_route_is_404_problem(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "no route" in r.json()["detail"]


def test_oversized_path_is_414(client):
    r = client.get("/v1/keys/" + "a" * 5000)
    assert r.status_code == 414


def test_oversized_headers_are_431(client):
    r = client.get(f"/v1/keys/{HIT}", headers={f"x-h{i}": "v" * 1000 for i in range(20)})
    assert r.status_code == 431


def test_oversized_header_names_on_a_hit_are_431(client):
    r = client.get(f"/v1/keys/{HIT}", headers={("x-" + "n" * 1500 + str(i)): "v" for i in range(12)})
    assert r.status_code == 431 and "16384 bytes" in r.json()["detail"]


def test_oversized_query_string_on_a_hit_is_414_and_a_small_one_is_ignored(client):
    r = client.get(f"/v1/keys/{HIT}?pad=" + "q" * MAX_PATH)
    assert r.status_code == 414 and f"limit is {MAX_PATH}" in r.json()["detail"]
    r = client.get(f"/v1/keys/{HIT}?x=1")
    assert r.status_code == 200 and r.content == b"this is a value"


def test_too_many_small_headers_are_431_and_a_normal_count_is_fine(client):
    r = client.get(f"/v1/keys/{HIT}", headers={f"x-h{i}": "v" for i in range(150)})
    assert r.status_code == 431 and "header fields" in r.json()["detail"]
    assert client.get(f"/v1/keys/{HIT}", headers={f"x-h{i}": "v" for i in range(40)}).status_code == 200


def test_docs_work_offline(client):
    for page, asset in (("/docs", "/static-docs/swagger-ui-bundle.js"), ("/redoc", "/static-docs/redoc.standalone.js")):
        html = client.get(page).text
        assert asset in html and "cdn" not in html.lower()
        assert client.get(asset).status_code == 200


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/keys/{key}", "/v1/batch", "/v1/stats", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert (
        spec["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["keys"]["maxItems"] == 10
    )


def test_metrics_exposition(client):
    client.get(f"/v1/keys/{HIT}")
    text = client.get("/metrics").text
    assert "kv_lookups_total" in text and "kv_request_duration_seconds_bucket" in text and "kv_table_keys" in text


def test_a_request_body_that_trickles_past_the_deadline_is_408(app):
    """A client that sends a body slowly (or stops halfway) is answered 408
    and the connection closed, instead of holding a worker's slot forever."""
    import asyncio

    from kv.http.fastpath import FastPath

    slow_app = FastPath(app.api, app.state, max_body=64 * 1024, body_seconds=0.3)
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"keys": [', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes

    messages = []

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/batch",
        "raw_path": b"/v1/batch",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "root_path": "",
    }
    asyncio.run(asyncio.wait_for(slow_app(scope, receive, send), 5))
    start = messages[0]
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert b"took longer than 0.3 s" in messages[1]["body"]


def test_table_corrupted_under_a_running_worker_gives_503_and_not_ready(tmp_path):
    """A byte of a record flipped on disk after the worker mapped the table: the
    record checksum catches it on the hit, the answer is a 503 problem (never
    the wrong value), and /readyz takes the worker out of rotation."""
    data = write_records(tmp_path / "c.data", [(HIT, b"this is a value")])
    build_table(data, tmp_path / "c.kvt")
    table = tmp_path / "c.kvt"
    app = create_app(table)
    with TestClient(app) as c:
        assert c.get(f"/v1/keys/{HIT}").content == b"this is a value"
        assert c.get("/readyz").status_code == 200
        table.chmod(0o644)
        with open(table, "r+b") as f:  # the mapping is shared: the worker sees this write
            f.seek(4096 + 37 + 2)  # records start at 4096: key, space, then the value
            f.write(b"X")
        r = c.get(f"/v1/keys/{HIT}")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert "corrupt" in r.json()["detail"].lower()
        r = c.post("/v1/batch", json={"keys": [HIT]})
        assert r.status_code == 503 and b"this is a value" not in r.content
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]


# -- HTTP rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("POST", f"/v1/keys/{HIT}", "GET, HEAD"),
        ("DELETE", f"/v1/keys/{HIT}", "GET, HEAD"),
        ("DELETE", "/v1/stats", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("GET", "/v1/batch", "POST"),
    ],
)
def test_405_allow_lists_every_method_of_the_route_head_wherever_get(client, method, path, allow):
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v1/stats", "/healthz", "/readyz", "/metrics", "/docs"])
def test_get_routes_answer_head_with_the_get_headers_and_no_body(client, path):
    got = client.get(path)
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == got.headers["content-type"]


def test_head_routes_stay_out_of_the_schema_unless_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/keys/{key}"]) == {"get", "head"}
    assert set(paths["/v1/stats"]) == {"get"}


@pytest.mark.parametrize("accept", ["application/JSON", "Application/Json", "APPLICATION/JSON, */*;q=0.5"])
def test_json_media_type_is_case_insensitive(client, accept):
    r = client.get(f"/v1/keys/{NUMBER}", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"key": NUMBER, "value": "1234"}


@pytest.mark.parametrize("key", ["\\ud800", "\\udfff-tail", "3479d894-3271-4935-88cf-a06f3cbb80a5\\udc00"])
def test_batch_with_an_unencodable_key_is_a_400_with_a_valid_json_body(client, key):
    """A lone surrogate is valid JSON in a request but no UTF-8 can encode
    it: the problem that echoes it escapes it (never a 500)."""
    r = client.post("/v1/batch", content=b'{"keys": ["%s"]}' % key.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    body = json.loads(r.content.decode("utf-8"))
    assert body["status"] == 400 and body["invalid"][0]["key"] == json.loads(f'"{key}"')


def test_batch_with_an_unencodable_key_is_a_400_in_fastapi_too(app):
    with TestClient(app.api) as c:
        r = c.post("/v1/batch", content=b'{"keys": ["\\ud800"]}')
    assert r.status_code == 400 and json.loads(r.content)["invalid"][0]["key"] == "\ud800"


def test_414_states_the_length_of_the_whole_request_target(client):
    target = f"/v1/keys/{HIT}?pad=" + "q" * MAX_PATH
    r = client.get(target)
    assert r.status_code == 414
    assert r.json()["detail"] == f"request target is {len(target)} bytes; the limit is {MAX_PATH}"


def test_a_trailing_slash_is_a_404_problem_not_a_redirect_to_the_clients_host(client):
    r = client.get("/v1/stats/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers
    assert r.headers["content-type"] == "application/problem+json"


def _asgi(app, method: str, path: str, headers: list, receive, http_version: str = "1.1") -> list[dict]:
    messages: list[dict] = []

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    return messages


def test_a_client_that_disconnects_mid_body_is_counted_499_never_500(table):
    """Half a batch body, then the client is gone: nothing to answer, and the
    request is counted under status 499 (client closed request)."""
    app = create_app(table)  # its own counters, which no flush task empties
    chunks = [{"type": "http.request", "body": b'{"keys": ["', "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return chunks.pop(0)

    messages = _asgi(app, "POST", "/v1/batch", [(b"host", b"t"), (b"content-type", b"application/json")], receive)
    assert messages == []
    assert app.state.counts.requests == {("/v1/batch", 499): 1}


async def _no_body():
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.mark.parametrize("path", [f"/v1/keys/{HIT}", "/healthz", "/v1/stats"])
def test_an_http11_request_without_host_is_a_400_problem(app, path):
    messages = _asgi(app, "GET", path, [(b"accept", b"*/*")], _no_body)
    assert messages[0]["status"] == 400
    assert (b"content-type", b"application/problem+json") in messages[0]["headers"]
    assert b"Host" in messages[1]["body"]


def test_an_http10_request_without_host_is_answered(app):
    messages = _asgi(app, "GET", f"/v1/keys/{HIT}", [], _no_body, http_version="1.0")
    assert messages[0]["status"] == 200 and messages[1]["body"] == b"this is a value"


def test_a_hit_whose_host_header_is_not_first_is_answered_in_full(app, held_flushes):
    before = sum(app.state.counts.fast)
    messages = _asgi(app, "GET", f"/v1/keys/{HIT}", [(b"accept", b"*/*"), (b"host", b"t")], _no_body)
    assert messages[0]["status"] == 200 and messages[1]["body"] == b"this is a value"
    assert sum(app.state.counts.fast) == before  # the checked path answered it


# -- /v1/stats and /metrics at a bounded rate --------------------------------------------


@pytest.mark.parametrize("path", ["/v1/stats", "/metrics"])
def test_a_flood_of_stats_or_metrics_renders_at_a_bounded_rate_and_catches_up(table, path):
    """Each answer counts a request, so every rendering differs from the last:
    the distinct bodies are the renderings. A flood gets RENDER_BURST fresh
    ones, then at most one per RENDER_SECONDS; a call RENDER_SECONDS later
    sees the flood's requests."""
    with TestClient(create_app(table)) as c:
        t0 = time.monotonic()
        bodies = [c.get(path).content for _ in range(RENDER_BURST + 40)]
        elapsed = time.monotonic() - t0
        renderings = len(set(bodies))
        assert RENDER_BURST <= renderings <= RENDER_BURST + 1 + elapsed / RENDER_SECONDS
        time.sleep(RENDER_SECONDS)
        assert c.get(path).content not in bodies


def test_stats_lag_at_most_the_render_window(table):
    with TestClient(create_app(table)) as c:
        for _ in range(RENDER_BURST + 5):  # spend the burst
            c.get("/v1/stats")
        hits = c.get("/v1/stats").json()["hits"]
        assert c.get(f"/v1/keys/{HIT}").status_code == 200
        deadline = time.monotonic() + RENDER_SECONDS + 0.5
        while c.get("/v1/stats").json()["hits"] == hits:
            assert time.monotonic() < deadline, "stats still without the hit after the render window"
            time.sleep(0.05)
