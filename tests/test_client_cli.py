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
