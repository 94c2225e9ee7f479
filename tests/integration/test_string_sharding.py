"""String-key shards behind a real nginx, rendered by `kv deploy nginx --keys
string`: nginx cannot compute a string key's shard (xxh3), so it sends each
key request to any shard (round robin), and a shard that does not hold the
key answers 421 with X-Accel-Redirect, which nginx follows internally to the
key's shard. Batches go through the shard-aware client. The shards are the
real builder's (kv build DATA.jsonl --shards 2)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from conftest import free_port
from serverutil import needs_nginx, nginx_front, start_replica, stop

from kv.cli import main
from kv.client import Client, key_path
from kv.deploy import render_nginx
from kv.keys import MAX_STRING_KEY, string_shard_of

pytestmark = needs_nginx

STRESS = {f"user:{i}": f"value {i}".encode() for i in range(40)}
STRESS.update(
    {
        "/": b"slash",
        "a/b": b"a slash inside",
        "..": b"dot dot",
        ".": b"dot",
        "%": b"percent",
        "%2F": b"literal",
        "?": b"question",
        "a?b": b"q inside",
        "#": b"hash",
        "+": b"plus",
        "a b": b"space",
        "tab\there": b"tab",
        "new\nline": b"newline",
        "ключ": "значение".encode(),
        "🔑": b"emoji",
        "User:42": b"upper",
        "3479D894-3271-4935-88CF-A06F3CBB80A5": b"upper uuid",
        "k" * MAX_STRING_KEY: b"longest",
        "binary": b"\xff\x00\n",
    }
)


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    d = tmp_path_factory.mktemp("strshards")
    ports = [free_port(), free_port()]
    listen = free_port()
    replicas = []
    try:
        # The real builder's shards (kv build --shards 2), which must split keys as the servers' string_shard_of does.
        data = d / "s.jsonl"
        data.write_text("".join(json.dumps({"key": k, "value_base64": base64.b64encode(v).decode()}) + "\n" for k, v in STRESS.items()))
        assert main(["build", str(data), "--shards", "2", "--no-progress"]) == 0
        for i in range(2):
            replicas.append(start_replica(d / f"s.shard-{i}-of-2.kvt", ports[i]))
        conf = render_nginx(2, {i: [f"127.0.0.1:{ports[i]}"] for i in range(2)}, listen=f"127.0.0.1:{listen}", keys="string")
        url = f"http://127.0.0.1:{listen}"
        with nginx_front(d, conf, url):
            yield {"url": url, "ports": ports, "dir": d}
    finally:
        for p in replicas:
            stop(p)


def test_both_shards_hold_keys(front):
    shards = {string_shard_of(k.encode(), 2) for k in STRESS}
    assert shards == {0, 1}


def test_every_key_is_served_through_the_front_whichever_shard_a_request_lands_on(front):
    """Round robin sends consecutive requests to alternate shards: each key is
    asked four times, so both the direct answer and the redirected one are seen."""
    with httpx.Client(base_url=front["url"], timeout=5) as c:
        for k, v in STRESS.items():
            for _ in range(4):
                r = c.get(key_path(k))
                assert r.status_code == 200 and r.content == v, (k, r.status_code, r.text[:200])
                assert "x-accel-redirect" not in r.headers


def test_head_json_and_conditional_requests_survive_the_redirect(front):
    with httpx.Client(base_url=front["url"], timeout=5) as c:
        for k in ("a/b", "🔑", "binary", "new\nline"):
            for _ in range(2):
                r = c.head(key_path(k))
                assert r.status_code == 200 and r.headers["content-length"] == str(len(STRESS[k]))
                r = c.get(key_path(k), headers={"accept": "application/json"})
                assert r.status_code == 200 and r.json()["key"] == k
                r2 = c.get(key_path(k), headers={"if-none-match": r.headers["etag"]})
                assert r2.status_code == 304


def test_misses_are_404_and_malformed_keys_400_through_the_front(front):
    with httpx.Client(base_url=front["url"], timeout=5) as c:
        for _ in range(4):
            assert c.get(key_path("nobody home")).status_code == 404
            assert c.get("/v1/keys/%FF").status_code == 400
            assert c.get("/v1/keys/" + "k" * (MAX_STRING_KEY + 1)).status_code == 400


def test_the_redirect_location_is_not_reachable_from_outside(front):
    r = httpx.get(f"{front['url']}/_kv_shard/1")
    assert r.status_code == 404


def test_front_serves_a_shard_map_that_says_the_key_kind(front):
    m = httpx.get(f"{front['url']}/v1/shards").json()
    assert m["shards"] == 2 and m["key_kind"] == "string" and "xxh3" in m["rule"]


def test_client_get_and_get_many_through_the_front(front):
    with Client(front["url"]) as c:
        for k, v in list(STRESS.items())[:10] + list(STRESS.items())[-15:]:
            assert c.get(k) == v, k
        got = c.get_many([*STRESS, "absent"])  # shard 0 answers /v1/batch 421, the client reads the map and splits
    assert got == STRESS and list(got) == list(STRESS)


def test_a_shard_server_answers_a_foreign_key_421_with_the_redirect_header(front):
    k = next(k for k in STRESS if string_shard_of(k.encode(), 2) == 1)
    r = httpx.get(f"http://127.0.0.1:{front['ports'][0]}{key_path(k)}")
    assert r.status_code == 421 and r.headers["x-accel-redirect"] == "/_kv_shard/1" and r.json()["shard"] == 1
