"""The real server: `kv serve` with 2 gunicorn workers on a free 127.0.0.1 port."""

import os
import random
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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

    def check(part):
        with httpx.Client(base_url=url, timeout=10) as c:
            for k, v in part:
                r = c.get(f"/v1/keys/{k}")
                assert r.status_code == 200 and r.content == v, k
        return len(part)

    with ThreadPoolExecutor(4) as pool:  # 4 keep-alive connections, spread over both workers
        assert sum(pool.map(check, [records[i::4] for i in range(4)])) == len(records)


def test_every_record_is_in_batch_answers(server):
    url, _, records = server
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(0, len(records), 1000):
            chunk = records[i : i + 1000]
            body = c.post("/v1/batch", json={"keys": [k for k, _ in chunk]}).json()
            assert body["missing"] == []
            assert {k: v.encode() for k, v in body["values"].items()} == dict(chunk)


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


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are (no client adds a Host), read the response to EOF."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_an_http11_request_without_host_is_a_400_from_the_real_server(server):
    url, _, records = server
    key = records[0][0]
    out = raw_request(url, f"GET /v1/keys/{key} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"application/problem+json" in out and b"Host header" in out
    out = raw_request(url, f"GET /v1/keys/{key} HTTP/1.0\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n" + records[0][1])


def test_a_trailing_slash_gets_no_redirect_to_the_host_the_client_named(server):
    url, _, _ = server
    r = httpx.get(f"{url}/v1/stats/", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


def settled_stats(url: str, hits_expected: int, timeout: float = 3.0) -> dict:
    """/v1/stats once every worker has flushed its counts (each does every 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(f"{url}/v1/stats").json()
        if stats["hits"] >= hits_expected or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_stats_sum_lookups_over_all_workers(server):
    url, proc, records = server
    time.sleep(0.3)  # earlier tests' counts: flushed by every worker within 50 ms
    before = httpx.get(f"{url}/v1/stats").json()
    n = 200
    for k, _ in records[:n]:
        assert fresh_get(f"{url}/v1/keys/{k}").status_code == 200  # a new connection each: both workers answer
    answered_by: set[int] = set()
    for _ in range(200):  # the kernel may hand many fresh connections in a row to one worker
        answered_by.add(fresh_get(f"{url}/v1/stats").json()["worker"])
        if len(answered_by) == 2:
            break
    after = settled_stats(url, before["hits"] + n)
    assert after["hits"] - before["hits"] == n
    assert after["lookups"] - before["lookups"] == n
    # Both workers counted some of the n, and the total any worker reports is theirs summed.
    pids = {str(p) for p in worker_pids(proc.pid)}
    grew = {pid: after["lookups_by_worker"].get(pid, 0) - before["lookups_by_worker"].get(pid, 0) for pid in pids}
    assert all(g > 0 for g in grew.values()), grew
    assert sum(grew.values()) == n
    assert len(answered_by) == 2  # stats answered by both workers, each with the sum
    assert after["keys"] == len(records)


def private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Private_Dirty")


def smaps_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0])
    return out


@pytest.fixture(scope="module")
def big_table(tmp_path_factory):
    """400,000 records: a 35 MiB table, so a worker that copied what it reads
    would grow by far more than the test's 10 MiB bound."""
    from kv.build import build_table
    from kv.gen import generate_file

    d = tmp_path_factory.mktemp("big")
    generate_file(400_000, d / "big.data", seed=11)
    build_table(d / "big.data", d / "big.kvt")
    keys = [line[:36].decode() for line in open(d / "big.data", "rb")]
    return d / "big.kvt", keys


def test_table_pages_are_shared_not_copied(big_table):
    table, keys = big_table
    rnd = random.Random(2)
    with running_server(table, workers=2) as (url, proc):
        pids = worker_pids(proc.pid)
        # Warm up the interpreter's caches on both paths with a few keys only: each
        # first touch maps the 64 KiB around it (the kernel's fault-around), and
        # the test wants most of the table still unmapped here.
        for _ in range(4):
            with httpx.Client(base_url=url, timeout=10) as c:
                c.post("/v1/batch", json={"keys": rnd.sample(keys, 5)})
                c.get(f"/v1/keys/{keys[0]}")
        before = {p: smaps_kib(p) for p in pids}
        done = 0
        while done < 95_000:  # batches on fresh connections spread over both workers
            with httpx.Client(base_url=url, timeout=10) as c:
                assert c.post("/v1/batch", json={"keys": rnd.sample(keys, 1000)}).status_code == 200
            done += 1000

        def get_many(part):
            with httpx.Client(base_url=url, timeout=10) as c:
                return sum(c.get(f"/v1/keys/{k}").status_code == 200 for k in part)

        with ThreadPoolExecutor(4) as pool:  # and single GETs, the fast path
            done += sum(pool.map(get_many, [rnd.sample(keys, 1250) for _ in range(4)]))
        assert done == 100_000
        for p in pids:
            after = smaps_kib(p)
            private = after["Private_Dirty"] - before[p]["Private_Dirty"]
            mapped = after["Rss"] - before[p]["Rss"]
            # The lookups did touch more of the table than the bound below (its pages
            # are now mapped in this worker: about 15 MiB each, measured), so a
            # worker that copied what it read would fail the bound ...
            assert mapped > 10 * 1024, f"worker {p} mapped only {mapped} KiB more: the test touched too little"
            # ... and they are page-cache pages shared with the other worker, not private copies.
            assert private < 10 * 1024, f"worker {p} private memory grew by {private} KiB"
            assert after["Shared_Clean"] + after["Private_Clean"] - before[p]["Shared_Clean"] - before[p]["Private_Clean"] > 10 * 1024


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
    reason = {
        "missing": "does not exist",
        "truncated": "",
        "foreign": "",
        "wrong_version": "version 99",
        "directory": "directory",
        "unreadable": "ermission denied",
    }[problem]
    assert reason in lines[0], lines[0]
