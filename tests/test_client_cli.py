"""kv.Client and the `kv get` / `kv stats` commands against a real server."""

import subprocess
import uuid

import pytest

import kv
from conftest import free_port
from kv.client import Client, ServerUnreachable
from serverutil import KV, running_server


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


def test_stats_prints_counters(server):
    url, records = server
    r = kv_cli("stats", url=url)
    assert r.returncode == 0
    assert f"{len(records):,}".encode() in r.stdout and b"hits" in r.stdout
    worker = next(line for line in r.stdout.decode().splitlines() if line.startswith("worker "))
    assert worker.split()[1].isdigit()  # a pid, printed as the kernel shows it: no thousands separator


def test_get_many_rereads_the_shard_map_after_a_reshard():
    """The front went from 2 to 4 shards since the client read its map: the
    old per-shard batch answers 421, the client reads the map again, once."""
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
        if request.url.path == "/openapi.json":
            return httpx.Response(404)
        index = int(request.url.path.split("/")[3])
        asked = _json.loads(request.content)["keys"]
        if any(shard_of(k.encode(), 4) != index for k in asked):  # the cluster has 4 shards now
            return httpx.Response(421, json={"detail": "key(s) of other shards"})
        return httpx.Response(200, json={"values": {k: "v" + k[:2] for k in asked}, "missing": []})

    with Client("http://front.invalid") as c:
        c.http = httpx.Client(base_url="http://front.invalid", transport=httpx.MockTransport(handler))
        assert c.get_many(keys) == {k: ("v" + k[:2]).encode() for k in keys}
        assert calls.count("/v1/shards") == 2 and c.shard_map()["shards"] == 4
