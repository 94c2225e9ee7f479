"""The real server: `kv serve` with 2 gunicorn workers on a free 127.0.0.1 port."""

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from serverutil import KV, fresh_get, running_server, worker_pids


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, workers=2) as (url, proc):
        yield url, proc, records


def test_every_record_is_served_byte_exact(server):
    url, _, records = server
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(0, len(records), 1000):
            chunk = records[i : i + 1000]
            body = c.post("/v1/batch", json={"keys": [k for k, _ in chunk]}).json()
            assert body["missing"] == []
            assert {k: v.encode() for k, v in body["values"].items()} == dict(chunk)
        for k, v in random.Random(1).sample(records, 300):
            r = c.get(f"/v1/keys/{k}")
            assert r.status_code == 200 and r.content == v


def test_misses_and_malformed_keys(server):
    url, _, _ = server
    with httpx.Client(base_url=url) as c:
        assert c.get(f"/v1/keys/{uuid.uuid4()}").status_code == 404
        r = c.get("/v1/keys/xyz")
        assert r.status_code == 400 and "xyz" in r.json()["detail"]


def test_both_workers_answer(server):
    url, proc, _ = server
    seen = {fresh_get(f"{url}/v1/keys/{uuid.uuid4()}").headers["x-kv-worker"] for _ in range(40)}
    assert seen == {str(p) for p in worker_pids(proc.pid)}
    assert len(seen) == 2


def test_stats_sum_lookups_over_all_workers(server):
    url, _, records = server
    before = httpx.get(f"{url}/v1/stats").json()
    n = 60
    workers = set()
    for k, _ in records[:n]:
        r = fresh_get(f"{url}/v1/keys/{k}")
        assert r.status_code == 200
    for _ in range(20):
        workers.add(fresh_get(f"{url}/v1/stats").json()["worker"])
    deadline = time.monotonic() + 3
    while True:
        after = httpx.get(f"{url}/v1/stats").json()
        if after["hits"] - before["hits"] == n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after["hits"] - before["hits"] == n
    assert len(workers) == 2  # answered by both, and each saw the other's counts
    assert after["keys"] == len(records)


def private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Private_Dirty")


def test_table_pages_are_shared_not_copied(server):
    url, proc, records = server
    pids = worker_pids(proc.pid)
    keys = [k for k, _ in records]
    rnd = random.Random(2)
    with httpx.Client(base_url=url, timeout=10) as c:  # warm up interpreter caches first
        c.post("/v1/batch", json={"keys": rnd.sample(keys, 1000)})
    before = {p: private_dirty_kib(p) for p in pids}
    done = 0
    while done < 100_000:  # batches on fresh connections spread over both workers
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/v1/batch", json={"keys": rnd.sample(keys, 1000)})
            assert r.status_code == 200
            done += 1000
    for p in pids:
        grown = private_dirty_kib(p) - before[p]
        assert grown < 10 * 1024, f"worker {p} private memory grew by {grown} KiB"


def test_killed_worker_is_replaced_while_others_answer(server):
    url, proc, records = server
    victim, survivor = worker_pids(proc.pid)
    os.kill(victim, signal.SIGKILL)
    key, value = records[0]
    failures = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            r = fresh_get(f"{url}/v1/keys/{key}")
            failures += r.status_code != 200
        except httpx.HTTPError:
            failures += 1
        pids = worker_pids(proc.pid)
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.05)
    pids = worker_pids(proc.pid)
    assert victim not in pids and survivor in pids and len(pids) == 2
    assert failures == 0
    with httpx.Client(base_url=url) as c:
        assert c.get(f"/v1/keys/{key}").content == value


@pytest.mark.parametrize("problem", ["missing", "truncated", "foreign", "wrong_version", "directory", "unreadable"])
def test_server_refuses_to_start_on_a_bad_table(gen_table, tmp_path, problem):
    table, _ = gen_table
    bad = tmp_path / "bad.kvt"
    if problem == "truncated":
        bad.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    elif problem == "foreign":
        bad.write_bytes(b"KVTABLE\x00" + os.urandom(8000))
    elif problem == "wrong_version":
        data = bytearray(table.read_bytes())
        data[8:12] = (99).to_bytes(4, "little")  # the version field (docs/FORMAT.md)
        bad.write_bytes(bytes(data))
    elif problem == "directory":
        bad.mkdir()
    elif problem == "unreadable":
        bad.write_bytes(table.read_bytes())
        bad.chmod(0)
    cmd = [KV, "serve", str(bad), "--bind", "127.0.0.1:1", "--workers", "1"]
    if problem == "unreadable" and os.geteuid() == 0:
        # root reads any file: run as nobody, as the systemd unit runs kv unprivileged
        tmp_path.chmod(0o755)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(bad) in lines[0] and "kv serve: cannot serve" in lines[0]
    reason = {"missing": "does not exist", "truncated": "", "foreign": "", "wrong_version": "version 99",
              "directory": "directory", "unreadable": "ermission denied"}[problem]
    assert reason in lines[0], lines[0]
