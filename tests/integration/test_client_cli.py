"""kv.Client and the `kv get` / `kv stats` commands against a real server."""

import os
import subprocess
import uuid

import pytest
from conftest import free_port
from serverutil import KV, running_server

import kv
from kv.client import Client, ServerUnreachable


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, workers=1) as (url, _):
        yield url, records


def kv_cli(*args, url=None):
    cmd = [KV, *args] + (["--url", url] if url else [])
    return subprocess.run(cmd, capture_output=True, timeout=30)


def test_client_get_get_many_stats(server):
    url, records = server
    with Client(url) as c:
        k, v = records[5]
        assert c.get(k) == v
        assert c.get(str(uuid.uuid4())) is None
        wanted = records[:2500]  # more than one batch
        got = c.get_many([k for k, _ in wanted] + [str(uuid.uuid4())])
        assert got == dict(wanted)
        assert c.stats()["keys"] == len(records)


def test_client_raises_invalid_key(server):
    url, _ = server
    with Client(url) as c, pytest.raises(kv.InvalidKey, match="characters long"):
        c.get("short")


def test_client_says_when_no_server_answers():
    with Client(f"http://127.0.0.1:{free_port()}", timeout=1) as c, pytest.raises(ServerUnreachable, match="no kv server"):
        c.get(str(uuid.uuid4()))


def test_client_url_from_environment(monkeypatch):
    monkeypatch.setenv("KV_URL", "http://127.0.0.1:9/")
    assert Client().url == "http://127.0.0.1:9"


def test_get_one_key_prints_raw_value_exit_0(server):
    url, records = server
    k, v = records[1]
    r = kv_cli("get", k, url=url)
    assert r.returncode == 0 and r.stdout == v


def test_get_many_keys_prints_tab_lines_exit_0(server):
    url, records = server
    r = kv_cli("get", records[0][0], records[1][0], url=url)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [records[0][0].encode() + b"\t" + records[0][1], records[1][0].encode() + b"\t" + records[1][1]]


def test_missing_key_exit_1(server):
    url, records = server
    r = kv_cli("get", records[0][0], str(uuid.uuid4()), url=url)
    assert r.returncode == 1 and b"not found" in r.stderr
    assert kv_cli("get", str(uuid.uuid4()), url=url).returncode == 1


def test_malformed_key_exit_2(server):
    url, _ = server
    r = kv_cli("get", "not-a-key", url=url)
    assert r.returncode == 2 and b"not-a-key" in r.stderr


def test_bad_usage_exit_2():
    assert kv_cli("get").returncode == 2


def test_unreachable_server_exit_3():
    r = kv_cli("get", str(uuid.uuid4()), url=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and b"no kv server" in r.stderr
    assert kv_cli("stats", url=f"http://127.0.0.1:{free_port()}").returncode == 3


def test_get_uses_kv_url_from_the_environment(server):
    url, records = server
    env = dict(os.environ, KV_URL=url)
    r = subprocess.run([KV, "get", records[3][0]], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == records[3][1], r.stderr
    r = subprocess.run([KV, "stats"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0 and f"{len(records):,}".encode() in r.stdout
    env["KV_URL"] = f"http://127.0.0.1:{free_port()}"  # --url wins over KV_URL
    r = subprocess.run([KV, "get", records[3][0], "--url", url], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == records[3][1]


def test_get_many_keys_is_one_request_to_a_single_server(server):
    """`kv get K1 K2`: one POST /v1/batch, no shard map or OpenAPI reads. The
    server's request counter moves by one more than across an idle interval
    (the /v1/stats call itself)."""
    url, records = server
    with Client(url) as c:
        before = c.stats()
        idle = c.stats()["requests"] - before["requests"]
        before = c.stats()
        r = kv_cli("get", records[0][0], records[1][0], url=url)
        assert r.returncode == 0
        after = c.stats()
    assert after["requests"] - before["requests"] == idle + 1
    assert after["batches"] - before["batches"] == 1


def test_get_many_adopts_the_limit_a_413_names(gen_table):
    """A server with --max-batch 7: the first 1000-key batch answers 413 with
    "limit": 7, the client resends split at 7 and keeps that limit."""
    table, records = gen_table
    keys = [k for k, _ in records[:20]]
    with running_server(table, "--max-batch", "7", workers=1) as (url, _), Client(url) as c:
        assert c.get_many(keys) == dict(records[:20])
        assert c.batch_limit == 7
        before = c.stats()
        assert c.get_many(keys) == dict(records[:20])
        after = c.stats()
    assert after["batches"] - before["batches"] == 3  # 7 + 7 + 6, no 413 this time
    assert after["by_status"].get("413", 0) == before["by_status"].get("413", 0)


def test_stats_prints_counters(server):
    url, records = server
    r = kv_cli("stats", url=url)
    assert r.returncode == 0
    assert f"{len(records):,}".encode() in r.stdout and b"hits" in r.stdout
    worker = next(line for line in r.stdout.decode().splitlines() if line.startswith("worker "))
    assert worker.split()[1].isdigit()  # a pid, printed as the kernel shows it: no thousands separator


def test_get_many_rereads_the_shard_map_after_a_reshard():
    """The front's plain /v1/batch answers 421 (its shard 0 holds only some of
    the keys), so the client reads the map: 2 shards. The front went to 4
    since, so the per-shard batches answer 421 too and the client reads the
    map again, once."""
    import json as _json

    import httpx

    from kv.client import Client
    from kv.keys import shard_of

    keys = [str(uuid.UUID(int=i << 120 | 7, version=4)) for i in range(0, 256, 9)]
    maps = [2, 4]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/shards":
            n = maps.pop(0) if len(maps) > 1 else maps[0]
            return httpx.Response(200, json={"shards": n, "batch_path": "/v1/shards/{index}/batch"})
        if request.url.path == "/v1/batch":
            return httpx.Response(421, json={"detail": "key(s) of other shards"})
        index = int(request.url.path.split("/")[3])
        asked = _json.loads(request.content)["keys"]
        if any(shard_of(k.encode(), 4) != index for k in asked):  # the cluster has 4 shards now
            return httpx.Response(421, json={"detail": "key(s) of other shards"})
        return httpx.Response(200, json={"values": {k: "v" + k[:2] for k in asked}, "missing": []})

    with Client("http://front.invalid") as c:
        c.http = httpx.Client(base_url="http://front.invalid", transport=httpx.MockTransport(handler))
        assert c.get_many(keys) == {k: ("v" + k[:2]).encode() for k in keys}
        assert calls.count("/v1/shards") == 2 and c.shard_map()["shards"] == 4
        assert calls[:2] == ["/v1/batch", "/v1/shards"] and "/openapi.json" not in calls
