"""String keys over HTTP (issue 12, serving half): keys route on the raw,
percent-encoded path; the fast path serves string hits; answers, batches,
shards, stats, the OpenAPI description and the client all handle any key.

Tables are written by tests/reference_writer.py (docs/FORMAT.md alone)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_writer import reference_table

from kv.app import create_app
from kv.client import Client, key_path
from kv.http.fastpath import MAX_PATH
from kv.keys import MAX_STRING_KEY, string_shard_of

UPPER_UUID = "3479D894-3271-4935-88CF-A06F3CBB80A5"
STRESS = {
    "/": b"slash",
    "a/b": b"a slash inside",
    "..": b"dot dot",
    ".": b"dot",
    "../v1/stats": b"not a path",
    "%": b"percent",
    "%2F": b"an encoded slash, literally",
    "?": b"question",
    "a?b=c": b"query-like",
    "#": b"hash",
    "+": b"plus",
    "a+b": b"plus between",
    "a b": b"space between",
    " lead": b"leading space",
    "tab\there": b"tab",
    "new\nline": b"newline",
    "cr\rlf\n": b"cr lf",
    "ключ": "значение".encode(),
    "🔑": "🗝".encode(),
    "User:42": b"upper",
    "user:42": b"lower",
    UPPER_UUID: b"an upper-case uuid, just a string",
    "-dash": b"starts with a dash",
    "k" * MAX_STRING_KEY: b"longest ascii key",
    "é" * (MAX_STRING_KEY // 2): b"longest two-byte key",
    "binary": b"\xff\x00\n\x80",
}


def string_table(tmp_path, records: dict[str, bytes], shard=(0, 1), name="s.kvt"):
    path = tmp_path / name
    path.write_bytes(
        reference_table([(k.encode(), v) for k, v in records.items()], kind="string", meta={"format": 2, "key_kind": "string"}, shard=shard)
    )
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(string_table(tmp_path_factory.mktemp("strhttp"), STRESS))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def encoded(key: str) -> str:
    """Every byte percent-encoded, unreserved ones too (legal, if unusual)."""
    return "".join(f"%{b:02X}" for b in key.encode())


# -- GET and HEAD -------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(STRESS), ids=lambda k: repr(k[:20]))
def test_every_stress_key_answers_its_value_through_the_client_encoding(client, key):
    r = client.get(key_path(key))
    assert r.status_code == 200 and r.content == STRESS[key]


@pytest.mark.parametrize("key", ["a/b", "a b", "🔑", "+", "%", "User:42"])
def test_every_stress_key_answers_fully_percent_encoded(client, key):
    r = client.get("/v1/keys/" + encoded(key))
    assert r.status_code == 200 and r.content == STRESS[key]


def test_a_1024_byte_key_fully_percent_encoded_fits_the_url_limit_and_hits_the_fast_path(app, client, held_flushes):
    key = "k" * MAX_STRING_KEY
    path = "/v1/keys/" + encoded(key)
    assert len(path) == 9 + 3 * 1024 and len(path) <= MAX_PATH
    before = sum(app.state.counts.fast)
    r = client.get(path)
    assert r.status_code == 200 and r.content == STRESS[key]
    assert sum(app.state.counts.fast) == before + 1


def test_an_encoded_slash_is_part_of_the_key_never_a_path_separator(client):
    assert client.get("/v1/keys/a%2Fb").content == b"a slash inside"
    assert client.get("/v1/keys/%252F").content == b"an encoded slash, literally"  # %25 is "%"
    assert client.get("/v1/keys/a%2Fc").status_code == 404


def test_plus_is_a_plus_not_a_space(client):
    assert client.get("/v1/keys/a+b").content == b"plus between"
    assert client.get("/v1/keys/a%20b").content == b"space between"


def test_keys_differing_only_in_case_are_two_keys(client):
    assert client.get("/v1/keys/User%3A42").content == b"upper"
    assert client.get("/v1/keys/user:42").content == b"lower"
    assert client.get("/v1/keys/USER:42").status_code == 404


def test_an_upper_case_uuid_is_just_a_string_and_is_not_canonicalised(client):
    assert client.get(f"/v1/keys/{UPPER_UUID}").content == STRESS[UPPER_UUID]
    r = client.get(f"/v1/keys/{UPPER_UUID.lower()}")
    assert r.status_code == 404
    assert client.post("/v1/batch", json={"keys": [UPPER_UUID.lower(), UPPER_UUID.replace("-", "")]}).json()["missing"] == [
        UPPER_UUID.lower(),
        UPPER_UUID.replace("-", ""),
    ]


def test_head_json_and_etag_work_for_string_keys(client, app):
    r = client.head(key_path("a b"))
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(STRESS["a b"]))
    r = client.get(key_path("binary"), headers={"accept": "application/json"})
    assert r.json() == {"key": "binary", "value_base64": base64.b64encode(STRESS["binary"]).decode()}
    r = client.get(key_path("new\nline"), headers={"accept": "application/json"})
    assert r.json() == {"key": "new\nline", "value": "newline"}
    r = client.get(key_path("🔑"), headers={"if-none-match": app.state.etag})
    assert r.status_code == 304


@pytest.mark.parametrize(
    "path,reason",
    [
        ("/v1/keys/", "empty"),
        ("/v1/keys/" + "k" * (MAX_STRING_KEY + 1), "1,025 bytes"),
        ("/v1/keys/" + "%C3%A9" * 512 + "x", "1,025 bytes"),
        ("/v1/keys/%FF", "not valid UTF-8"),
        ("/v1/keys/ok%C3", "not valid UTF-8"),
    ],
)
def test_empty_overlong_and_non_utf8_keys_are_400_problems(client, path, reason):
    r = client.get(path)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert reason in r.json()["detail"]


def test_a_miss_is_a_404_that_quotes_the_key_safely(client):
    r = client.get(key_path("no\nsuch key"))
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "'no\\nsuch key'" in detail and "\n" not in detail
    r = client.get(key_path("x" * 1000))
    assert r.status_code == 404 and len(r.json()["detail"]) < 300


def test_other_methods_on_a_key_are_405_with_allow(client):
    r = client.delete(key_path("a/b"))
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = client.post(key_path("a/b"), content=b"x")
    assert r.status_code == 405


def test_string_hits_with_and_without_percent_take_the_fast_path(app, client, held_flushes):
    for key in ("user:42", "a b", "🔑", "-dash"):
        before = sum(app.state.counts.fast)
        assert client.get(key_path(key)).status_code == 200
        assert sum(app.state.counts.fast) == before + 1, key


# -- batches ------------------------------------------------------------------------------


def test_a_batch_of_string_keys_answers_values_binary_values_and_missing(client):
    keys = ["a/b", "tab\there", "🔑", "binary", "missing one", UPPER_UUID]
    body = client.post("/v1/batch", json={"keys": keys}).json()
    assert body["values"] == {"a/b": "a slash inside", "tab\there": "tab", "🔑": "🗝", UPPER_UUID: STRESS[UPPER_UUID].decode()}
    assert body["values_base64"] == {"binary": base64.b64encode(STRESS["binary"]).decode()}
    assert body["missing"] == ["missing one"]


def test_a_batch_with_an_empty_or_overlong_key_is_a_400_naming_it(client):
    r = client.post("/v1/batch", json={"keys": ["a/b", "", "k" * 1025]})
    assert r.status_code == 400 and len(r.json()["invalid"]) == 2


# -- what the table is ----------------------------------------------------------------------


def test_stats_name_the_key_kind(client):
    assert client.get("/v1/stats").json()["key_kind"] == "string"


def test_openapi_documents_string_keys_without_the_uuid_pattern(client):
    doc = client.get("/openapi.json").json()
    get = doc["paths"]["/v1/keys/{key}"]["get"]
    assert "percent-encoded" in get["description"]
    assert "pattern" not in get["parameters"][0]["schema"]
    items = doc["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["keys"]["items"]
    assert "pattern" not in items


# -- shards -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard0(tmp_path_factory):
    d = tmp_path_factory.mktemp("strshard")
    own = {k: v for k, v in STRESS.items() if string_shard_of(k.encode(), 2) == 0}
    app = create_app(string_table(d, own, shard=(0, 2)))
    with TestClient(app) as c:
        yield app, c


def test_a_shard_server_serves_its_own_string_keys_on_the_fast_path(shard0, held_flushes):
    app, c = shard0
    key = next(k for k in STRESS if string_shard_of(k.encode(), 2) == 0 and "%" not in quote(k, safe=":"))
    before = sum(app.state.counts.fast)
    assert c.get(key_path(key)).content == STRESS[key]
    assert sum(app.state.counts.fast) == before + 1


def test_a_shard_server_answers_421_with_a_redirect_to_the_keys_shard(shard0):
    _, c = shard0
    key = next(k for k in STRESS if string_shard_of(k.encode(), 2) == 1)
    r = c.get(key_path(key))
    assert r.status_code == 421 and r.json()["shard"] == 1
    assert r.headers["x-accel-redirect"] == "/_kv_shard/1"
    r = c.post("/v1/batch", json={"keys": [key]})
    assert r.status_code == 421 and r.json()["foreign"] == [{"key": key, "shard": 1}]


# -- the client -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,path",
    [
        ("+", "/v1/keys/%2B"),
        ("/", "/v1/keys/%2F"),
        ("%", "/v1/keys/%25"),
        ("a b", "/v1/keys/a%20b"),
        ("é", "/v1/keys/%C3%A9"),
        ("🔑", "/v1/keys/%F0%9F%94%91"),
        ("..", "/v1/keys/%2E%2E"),
        (".", "/v1/keys/%2E"),
        ("a.b-c_d~e", "/v1/keys/a.b-c_d~e"),
        ("?#", "/v1/keys/%3F%23"),
    ],
)
def test_the_client_percent_encodes_every_byte_outside_unreserved(key, path):
    assert key_path(key) == path


def client_on(app) -> Client:
    c = Client("http://test")
    c.http = TestClient(app, base_url="http://test")
    return c


def test_the_client_gets_every_stress_key_one_by_one_and_in_a_batch(app):
    with client_on(app) as c:
        for k, v in STRESS.items():
            assert c.get(k) == v, k
        assert c.get("no such key") is None
        assert c.get_many(list(STRESS) + ["no such key"]) == STRESS


# -- property: any keys, any values ---------------------------------------------------------

keys = st.text(min_size=1, max_size=30).filter(lambda k: not any(0xD800 <= ord(c) <= 0xDFFF for c in k))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, st.binary(max_size=64), min_size=1, max_size=12))
def test_any_string_keys_and_binary_values_round_trip_through_get_batch_and_client(tmp_path, records):
    app = create_app(string_table(tmp_path, records, name="p.kvt"))
    with TestClient(app) as http:
        for k, v in records.items():
            r = http.get(key_path(k))
            assert r.status_code == 200 and r.content == v, k
        body = http.post("/v1/batch", json={"keys": list(records)}).json()
        got = {k: v.encode() for k, v in body["values"].items()}
        got.update((k, base64.b64decode(v)) for k, v in body.get("values_base64", {}).items())
        assert got == records and body["missing"] == []
    with client_on(app) as c:
        assert c.get_many(list(records)) == records
        k = next(iter(records))
        assert c.get(k) == records[k]


def test_the_same_answers_come_from_a_raw_asgi_client(app):
    """httpx's own ASGI transport (not Starlette's TestClient) sends the same raw paths."""
    import asyncio

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return [(await c.get(key_path(k))).content for k in STRESS]

    assert asyncio.run(run()) == list(STRESS.values())


def test_problem_bodies_are_json_for_any_key(client):
    for k in ("\x00", "\x7f", "'\"", "\\"):
        r = client.get(key_path(k))
        assert r.status_code == 404 and json.loads(r.content)["status"] == 404


def test_a_table_built_by_kv_build_from_jsonl_serves_every_stress_key(tmp_path):
    """The real builder (kv build --format jsonl), not the reference writer."""
    from kv.cli import main

    data = tmp_path / "stress.jsonl"
    data.write_text("".join(json.dumps({"key": k, "value_base64": base64.b64encode(v).decode()}) + "\n" for k, v in STRESS.items()))
    assert main(["build", str(data), "-o", str(tmp_path / "stress.kvt"), "--no-progress"]) == 0
    with client_on(create_app(tmp_path / "stress.kvt")) as c:
        assert c.stats()["key_kind"] == "string"
        for k, v in STRESS.items():
            assert c.get(k) == v, k
        assert c.get_many(list(STRESS)) == STRESS
