"""Writes through the real server: `kv serve --root DIR --writable` under
gunicorn with 4 workers on 127.0.0.1 (2 where a test says so)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
from conftest import write_records
from hypothesis import given, settings
from hypothesis import strategies as st
from serverutil import KV, fresh_get, running_server, worker_pids

from kv import changelog

TOKEN = "write-token-for-tests-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ENV = {"KV_WRITE_TOKEN": TOKEN}


def key(i: int) -> str:
    return str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15 + 1) % (1 << 128)))


def writable(root: Path, *extra: str, workers: int = 4, **kw):
    return running_server("--root", root, "--writable", *extra, workers=workers, env={**ENV, **kw.pop("env", {})}, **kw)


def batch(c: httpx.Client, url: str, keys: list[str]) -> dict:
    r = c.post(url + "/v1/batch", json={"keys": keys})
    assert r.status_code == 200, r.text
    return r.json()


def quick_get(url: str, path: str) -> tuple[int, bytes]:
    """GET on a fresh connection (any worker), without httpx's per-client setup cost."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def log_state(root: Path) -> dict:
    """The state the logs on disk describe: the base table with the active log replayed in order."""
    from kv.live import LiveTable

    live = LiveTable(root)
    try:
        return {k.decode(): v for k, v in live.items()}
    finally:
        live.close()


# -- starting ---------------------------------------------------------------------------------------


def test_writable_without_a_token_refuses_to_start_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KV_WRITE_TOKEN"}
    r = subprocess.run(
        [KV, "serve", "--root", str(tmp_path / "r"), "--writable", "--bind", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "token" in r.stderr


def test_an_empty_writable_root_starts_empty_and_takes_writes_from_a_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("# the write token\n" + TOKEN + "\n")
    with running_server("--root", tmp_path / "r", "--writable", "--write-token-file", token_file, "--keys", "string", workers=2) as (
        url,
        _,
    ):
        assert httpx.get(url + "/v1/stats").json()["keys"] == 0
        r = httpx.put(url + "/v1/keys/user:1", content=b"v", headers=AUTH)
        assert r.status_code == 200, r.text
        assert fresh_get(url + "/v1/keys/user:1").content == b"v"


# -- refusals ------------------------------------------------------------------------------------------


def test_write_routes_answer_405_with_allow_on_a_read_only_server(gen_table):
    table, records = gen_table
    with running_server(table, workers=1) as (url, _):
        r = httpx.put(url + f"/v1/keys/{records[0][0]}", content=b"x", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        r = httpx.delete(url + f"/v1/keys/{records[0][0]}", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        r = httpx.post(url + "/v1/write", json={"set": {records[0][0]: "x"}}, headers=AUTH)
        assert r.status_code == 405 and "allow" in r.headers


def test_writes_without_a_token_are_401_and_with_a_wrong_one_403(tmp_path):
    with writable(tmp_path / "r", workers=1) as (url, _):
        k = key(1)
        r = httpx.put(url + f"/v1/keys/{k}", content=b"x")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = httpx.put(url + f"/v1/keys/{k}", content=b"x", headers={"authorization": "Bearer wrong-token-xyz"})
        assert r.status_code == 403 and TOKEN not in r.text
        r = httpx.post(url + "/v1/write", json={"delete": [k]}, headers={"authorization": "Basic abc"})
        assert r.status_code == 401
        two = httpx.Headers([("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong-token-xyz")])
        r = httpx.put(url + f"/v1/keys/{k}", content=b"x", headers=two)
        assert r.status_code == 400 and r.json()["detail"].startswith("more than one Authorization header")
        assert httpx.get(url + f"/v1/keys/{k}").status_code == 404  # nothing was written


def test_more_keys_than_max_batch_is_413_and_changes_nothing(tmp_path):
    with writable(tmp_path / "r", "--max-batch", "10", workers=1) as (url, _):
        r = httpx.post(url + "/v1/write", json={"set": {key(i): "v" for i in range(11)}}, headers=AUTH)
        assert r.status_code == 413
        assert httpx.get(url + "/v1/stats").json()["keys"] == 0


def test_a_malformed_key_makes_the_whole_write_a_400_that_changes_nothing(tmp_path):
    with writable(tmp_path / "r", workers=1) as (url, _):
        g = httpx.get(url + "/v1/stats").json()["generation"]
        r = httpx.post(url + "/v1/write", json={"set": {key(1): "a", "not-a-key": "b"}, "delete": [key(2)]}, headers=AUTH)
        assert r.status_code == 400 and "not-a-key" in r.text
        assert httpx.put(url + "/v1/keys/xyz", content=b"v", headers=AUTH).status_code == 400
        assert httpx.get(url + f"/v1/keys/{key(1)}").status_code == 404
        assert httpx.get(url + "/v1/stats").json()["generation"] == g


def test_delete_of_an_absent_key_is_404_and_makes_no_generation(tmp_path):
    with writable(tmp_path / "r", workers=1) as (url, _):
        g = httpx.get(url + "/v1/stats").json()["generation"]
        assert httpx.delete(url + f"/v1/keys/{key(1)}", headers=AUTH).status_code == 404
        assert httpx.get(url + "/v1/stats").json()["generation"] == g
        httpx.put(url + f"/v1/keys/{key(1)}", content=b"v", headers=AUTH)
        r = httpx.delete(url + f"/v1/keys/{key(1)}", headers=AUTH)
        assert r.status_code == 200 and r.json()["generation"] != g
        assert httpx.get(url + f"/v1/keys/{key(1)}").status_code == 404


# -- consistency -----------------------------------------------------------------------------------------


def test_read_your_writes_on_every_worker_after_each_of_100_puts(tmp_path):
    with writable(tmp_path / "r") as (url, _):
        for i in range(100):
            r = httpx.put(url + f"/v1/keys/{key(i)}", content=b"value %d" % i, headers=AUTH)
            assert r.status_code == 200, r.text
            gen = r.json()["generation"]
            assert r.headers["x-kv-generation"] == gen and r.headers["etag"] == f'"{gen}"'
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)  # a new connection: any worker
            conn.request("GET", f"/v1/keys/{key(i)}")
            got = conn.getresponse()
            assert got.status == 200 and got.read() == b"value %d" % i
            assert got.getheader("x-kv-generation") == gen
            conn.close()


def test_multi_key_writes_are_all_or_nothing_to_batch_readers(tmp_path):
    keys = [key(i) for i in range(100)]
    failures, mixed, reads = [], [], [0]
    done = threading.Event()
    with writable(tmp_path / "r") as (url, _):
        r = httpx.post(url + "/v1/write", json={"set": dict.fromkeys(keys, "0")}, headers=AUTH)
        assert r.status_code == 200

        def reader():
            with httpx.Client(timeout=10) as c:
                while not done.is_set():
                    try:
                        r = c.post(url + "/v1/batch", json={"keys": keys})
                        if r.status_code != 200:
                            failures.append(r.status_code)
                            continue
                        values = set(r.json()["values"].values())
                        if len(values) != 1 or r.json()["missing"]:
                            mixed.append(values)
                        reads[0] += 1
                    except httpx.HTTPError as e:
                        failures.append(repr(e))

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        with httpx.Client(timeout=10, headers=AUTH) as w:
            for n in range(1, 201):
                r = w.post(url + "/v1/write", json={"set": {k: str(n) for k in keys}})
                assert r.status_code == 200, r.text
        done.set()
        for t in threads:
            t.join()
        assert not failures and not mixed and reads[0] > 50


def test_concurrent_writers_end_in_the_serial_order_of_the_log(tmp_path):
    root = tmp_path / "r"
    acked = []
    with writable(root) as (url, _):

        def writer(w: int):
            with httpx.Client(timeout=30, headers=AUTH) as c:
                for n in range(25):
                    ks = [key((w * 7 + n * 3 + j) % 20) for j in range(3)]  # overlapping across writers
                    if n % 5 == 4:
                        r = c.post(url + "/v1/write", json={"delete": ks[:1], "set": dict.fromkeys(ks[1:], f"{w}.{n}")})
                    else:
                        r = c.post(url + "/v1/write", json={"set": dict.fromkeys(ks, f"{w}.{n}")})
                    assert r.status_code == 200, r.text
                    acked.append(r.json()["generation"])

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(acked) == 200 and len(set(acked)) == 200
        served = batch(httpx.Client(), url, [key(i) for i in range(20)])
    # Replay the log in its order: that is the state served.
    st = log_state(root)
    assert {k: v.decode() for k, v in st.items()} == served["values"]
    head, groups, _, _ = changelog.scan(changelog.log_path(root, changelog.epochs(root)[-1]))
    assert len(groups) == 200 and {f"{head.base}-{g.seq}" for g in groups} == set(acked)


# -- durability ----------------------------------------------------------------------------------------


def test_after_sigkill_of_every_process_each_acknowledged_write_is_there_and_none_half(tmp_path):
    root = tmp_path / "r"
    keys = [key(i) for i in range(10)]
    acked: list[int] = []
    with writable(root, workers=4) as (url, proc):
        stop_at = time.monotonic() + 2.0

        def stream():
            with httpx.Client(timeout=5, headers=AUTH) as c:
                n = 0
                while True:
                    n += 1
                    try:
                        r = c.post(url + "/v1/write", json={"set": {k: str(n) for k in keys}})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked.append(n)

        t = threading.Thread(target=stream)
        t.start()
        while time.monotonic() < stop_at:
            time.sleep(0.05)
        pids = [proc.pid, *worker_pids(proc.pid)]
        os.killpg(proc.pid, signal.SIGKILL)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t.join()
        proc.wait()
    assert len(acked) > 10
    with writable(root, workers=2) as (url, _):
        values = batch(httpx.Client(), url, keys)["values"]
        assert len(set(values.values())) == 1, values  # none half-applied
        assert int(next(iter(values.values()))) >= acked[-1]  # every acknowledged one there


# -- compaction, publish, rollback -----------------------------------------------------------------------


def test_compaction_under_load_keeps_every_read_and_write(tmp_path):
    root = tmp_path / "r"
    failures = []
    done = threading.Event()
    with writable(root, "--compact-changes", "300", workers=2) as (url, _):
        base0 = httpx.get(url + "/v1/stats").json()["base_generation"]

        def reader():
            with httpx.Client(timeout=10) as c:
                while not done.is_set():
                    r = c.post(url + "/v1/batch", json={"keys": [key(i) for i in range(50)]})
                    if r.status_code != 200:
                        failures.append(r.status_code)

        t = threading.Thread(target=reader)
        t.start()
        with httpx.Client(timeout=10, headers=AUTH) as w:
            for n in range(40):
                r = w.post(url + "/v1/write", json={"set": {key(i): f"{n}" for i in range(50)}})
                assert r.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = httpx.get(url + "/v1/stats").json()
            if s["base_generation"] != base0 and s["pending_changes"] < 300:
                break
            time.sleep(0.2)
        done.set()
        t.join()
        assert s["base_generation"] != base0, s
        assert not failures
        values = batch(httpx.Client(), url, [key(i) for i in range(50)])["values"]
        assert set(values.values()) == {"39"}
        assert s["keys"] == 50


def test_publish_switches_running_workers_without_restarting_them(tmp_path):
    root = tmp_path / "r"
    a = write_records(tmp_path / "a.data", [(key(1), b"old")])
    b = write_records(tmp_path / "b.data", [(key(1), b"new")])
    subprocess.run([KV, "publish", str(a), "--root", str(root)], check=True, capture_output=True)
    with running_server("--root", root, workers=4) as (url, proc):
        deadline = time.monotonic() + 20
        while len(worker_pids(proc.pid)) != 4 or any(quick_get(url, f"/v1/keys/{key(1)}") != (200, b"old") for _ in range(20)):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)  # every worker booted and serving
        pids = worker_pids(proc.pid)
        subprocess.run([KV, "publish", str(b), "--root", str(root)], check=True, capture_output=True)
        # Not within a second: at once, every worker's next request (each checks the head page).
        assert all(quick_get(url, f"/v1/keys/{key(1)}") == (200, b"new") for _ in range(40))
        assert worker_pids(proc.pid) == pids
        time.sleep(0.2)
        assert httpx.get(url + "/v1/stats").json()["workers"] == 4  # each counted once, under the generation it serves


def test_a_publish_of_the_other_key_kind_switches_running_workers_and_their_fast_path(tmp_path):
    """The fast path chose its lookup (percent-decoding or not) by the key kind
    the worker started with: after a publish of a string table onto a UUID
    root, `a%20b` read the literal key `a%20b` instead of `a b`."""
    root = tmp_path / "r"
    a = write_records(tmp_path / "a.data", [(key(1), b"uuid")])
    b = tmp_path / "b.tsv"
    b.write_bytes(b"a b\tspace\na%20b\tliteral\nplain\tp\n")
    subprocess.run([KV, "publish", str(a), "--root", str(root)], check=True, capture_output=True)
    with running_server("--root", root, workers=2) as (url, _):
        assert quick_get(url, f"/v1/keys/{key(1)}") == (200, b"uuid")
        subprocess.run([KV, "publish", str(b), "--root", str(root)], check=True, capture_output=True)
        for _ in range(20):  # both workers, on fresh connections
            assert quick_get(url, "/v1/keys/a%20b") == (200, b"space")
            assert quick_get(url, "/v1/keys/a%2520b") == (200, b"literal")
            assert quick_get(url, "/v1/keys/plain") == (200, b"p")
            assert quick_get(url, f"/v1/keys/{key(1)}")[0] == 404


def test_publish_replaces_the_writes_and_rollback_refuses_then_forces(tmp_path):
    root = tmp_path / "r"
    data = write_records(tmp_path / "a.data", [(key(1), b"published")])
    with writable(root, workers=2) as (url, _):
        httpx.put(url + f"/v1/keys/{key(2)}", content=b"written", headers=AUTH)
        subprocess.run([KV, "publish", str(data), "--root", str(root)], check=True, capture_output=True)
        assert fresh_get(url + f"/v1/keys/{key(2)}").status_code == 404
        assert fresh_get(url + f"/v1/keys/{key(1)}").content == b"published"
        httpx.put(url + f"/v1/keys/{key(3)}", content=b"after", headers=AUTH)
        r = subprocess.run([KV, "rollback", "--root", str(root)], capture_output=True, text=True)
        assert r.returncode == 1 and "discard 1 write" in r.stderr
        assert fresh_get(url + f"/v1/keys/{key(3)}").content == b"after"
        r = subprocess.run([KV, "rollback", "--root", str(root), "--force"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert fresh_get(url + f"/v1/keys/{key(2)}").content == b"written"
        assert fresh_get(url + f"/v1/keys/{key(3)}").status_code == 404


def test_stats_and_metrics_count_sets_and_deletes_over_all_workers(tmp_path):
    with writable(tmp_path / "r") as (url, _):
        for i in range(6):
            with httpx.Client(headers=AUTH) as c:  # fresh connections: several workers
                c.put(url + f"/v1/keys/{key(i)}", content=b"12345")
        with httpx.Client(headers=AUTH) as c:
            c.post(url + "/v1/write", json={"delete": [key(0), key(1)]})
        time.sleep(0.3)
        s = httpx.get(url + "/v1/stats").json()
        assert (s["sets"], s["deletes"], s["keys"], s["value_bytes"]) == (6, 2, 4, 20)
        assert s["pending_changes"] == 8 and s["base_generation"]
        m = httpx.get(url + "/metrics").text
        assert 'kv_writes_total{op="set"} 6.0' in m and 'kv_writes_total{op="delete"} 2.0' in m


# -- the CLI and the client -------------------------------------------------------------------------------


def kv(*args, env=None):
    return subprocess.run([KV, *map(str, args)], capture_output=True, env={**os.environ, **(env or {})}, timeout=60)


def test_kv_set_and_delete_exit_statuses(tmp_path):
    with writable(tmp_path / "r", workers=2) as (url, _):
        tok = {"KV_TOKEN": TOKEN, "KV_URL": url}
        assert kv("set", key(1), "one", env=tok).returncode == 0
        assert kv("set", f"{key(2)}=two", f"{key(3)}=three", env=tok).returncode == 0
        data = write_records(tmp_path / "d.data", [(key(4), b"four"), (key(5), b"five")])
        assert kv("set", "--file", data, env=tok).returncode == 0
        assert kv("get", key(1), key(2), key(3), key(4), key(5), env=tok).returncode == 0
        assert kv("delete", key(1), key(9), env=tok).returncode == 1  # one absent: still atomic for the other
        assert kv("get", key(1), env=tok).returncode == 1
        stats = json.loads(kv("stats", "--json", env=tok).stdout)
        assert (stats["sets"], stats["deletes"], stats["keys"]) == (5, 2, 4)
        assert stats["pending_changes"] == 7 and stats["writable"]
        r = kv("set", "not-a-key", "x", env=tok)
        assert r.returncode == 2
        r = kv("set", key(1), "x", env={"KV_URL": url, "KV_TOKEN": "wrong-token-xyz"})
        assert r.returncode == 4 and b"403" in r.stderr
        r = kv("set", key(1), "x", env={"KV_URL": "http://127.0.0.1:9", "KV_TOKEN": TOKEN})
        assert r.returncode == 3


def test_client_set_set_many_delete(tmp_path):
    from kv import Client

    with writable(tmp_path / "r", workers=2) as (url, _):
        with Client(url, token=TOKEN) as c:
            g1 = c.set(key(1), b"one")
            g2 = c.set_many({key(2): b"two", key(3): "three", key(4): b"\xff"})
            assert g1 != g2
            assert c.get_many([key(1), key(2), key(3), key(4)]) == {key(1): b"one", key(2): b"two", key(3): b"three", key(4): b"\xff"}
            assert c.delete(key(1), key(9)) == [key(9)]
            assert c.get(key(1)) is None


# -- a model ---------------------------------------------------------------------------------------------

KEYS = [key(i) for i in range(12)]
values = st.binary(max_size=12).filter(lambda b: b"\n" not in b)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), values),
        st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none()),
        st.tuples(
            st.just("write"),
            st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
            st.lists(st.sampled_from(KEYS), max_size=3, unique=True),
        ),
        st.tuples(st.just("compact"), st.none(), st.none()),
    ),
    min_size=1,
    max_size=12,
)


def test_random_writes_through_http_match_a_dict_across_compactions_and_a_restart(tmp_path):
    from kv.client import write_body
    from kv.compact import compact

    root = tmp_path / "r"
    model: dict[str, bytes] = {}

    def check(c: httpx.Client, url: str) -> None:
        got = c.post(url + "/v1/batch", json={"keys": KEYS}).json()
        served = {k: v.encode() for k, v in got["values"].items()}
        served.update({k: base64.b64decode(v) for k, v in got.get("values_base64", {}).items()})
        assert served == model

    with writable(root, workers=2) as (url, _), httpx.Client(headers=AUTH, timeout=30) as c:

        @settings(max_examples=25, deadline=None)
        @given(operations)
        def run(program):
            for op, a, b in program:
                if op == "put":
                    assert c.put(url + f"/v1/keys/{a}", content=b).status_code == 200
                    model[a] = b
                elif op == "delete":
                    r = c.delete(url + f"/v1/keys/{a}")
                    assert r.status_code == (200 if a in model else 404)
                    model.pop(a, None)
                elif op == "write":
                    deletes = [k for k in b if k not in a]
                    if not a and not deletes:
                        continue
                    assert c.post(url + "/v1/write", json=write_body(a, deletes)).status_code == 200
                    model.update(a)
                    for k in deletes:
                        model.pop(k, None)
                else:
                    compact(root, log=lambda m: None)
                check(httpx.Client(), url)  # a fresh connection: any worker

        run()
    with writable(root, workers=2) as (url, _):
        check(httpx.Client(), url)


def test_reads_go_on_while_a_writer_waits_for_the_write_lock(tmp_path):
    import fcntl

    root = tmp_path / "r"
    with writable(root, workers=2) as (url, _):
        assert httpx.put(url + f"/v1/keys/{key(1)}", content=b"before", headers=AUTH).status_code == 200
        with open(root / ".write.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # as a writer in the middle of a commit would
            results = []
            t = threading.Thread(
                target=lambda: results.append(httpx.put(url + f"/v1/keys/{key(1)}", content=b"after", headers=AUTH, timeout=30))
            )
            t.start()
            time.sleep(0.3)
            slowest = 0.0
            for _ in range(200):  # fresh connections: every worker, the waiting writer's included
                t0 = time.monotonic()
                assert quick_get(url, f"/v1/keys/{key(1)}") == (200, b"before")
                slowest = max(slowest, time.monotonic() - t0)
            assert slowest < 0.5
            assert t.is_alive()  # the write still waits
        t.join()
        assert results[0].status_code == 200
        assert fresh_get(url + f"/v1/keys/{key(1)}").content == b"after"


def test_many_concurrent_writers_on_one_worker_all_commit(tmp_path):
    """More writers queued in one worker than it has threads must not starve
    the committing writer of the thread its fsync needs."""
    statuses: list[int] = []
    with writable(tmp_path / "r", workers=1) as (url, _):

        def writer(w: int) -> None:
            with httpx.Client(timeout=20, headers=AUTH) as c:
                for n in range(10):
                    statuses.append(c.put(url + f"/v1/keys/{key(n)}", content=f"{w}.{n}".encode()).status_code)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 160


def test_with_read_tokens_writes_take_the_write_token_and_reads_a_read_token(tmp_path):
    read_tokens = tmp_path / "read-tokens"
    read_tokens.write_text("reader-token-0001\n")
    read_tokens.chmod(0o600)
    with writable(tmp_path / "r", "--read-token-file", read_tokens, workers=1) as (url, _):
        reader = {"authorization": "Bearer reader-token-0001"}
        assert httpx.put(url + f"/v1/keys/{key(1)}", content=b"v", headers=AUTH).status_code == 200
        assert httpx.put(url + f"/v1/keys/{key(1)}", content=b"w", headers=reader).status_code == 403
        assert httpx.get(url + f"/v1/keys/{key(1)}", headers=reader).content == b"v"
        assert httpx.get(url + f"/v1/keys/{key(1)}").status_code == 401
