"""Publish and SIGHUP under load: zero failed requests, every value consistent
with the generation its response names, only the new generation afterwards."""

import random
import signal
import threading
import time
import uuid

import httpx
from conftest import write_records
from serverutil import fresh_get, running_server

from kv.client import Client
from kv.publish import publish

THREADS = 8


def make_generation(path, keys, tag):
    return write_records(path, [(k, f"{k[:8]} {tag}".encode()) for k in keys])


def test_publish_and_reload_under_load_fail_nothing(tmp_path):
    rnd = random.Random(4)
    keys = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(2000)]
    root = tmp_path / "root"
    tags = {}
    tags[publish(make_generation(tmp_path / "a.data", keys, "alpha"), root, log=lambda m: None)] = "alpha"
    with running_server("--root", root, workers=2) as (url, proc):
        stop = threading.Event()
        lock = threading.Lock()
        seen = []  # (time, generation)
        failures = []
        answers = []

        def load():
            with Client(url, timeout=5, retries=0) as c:  # no retries: a reset connection counts as a failure
                r = random.Random()
                while not stop.is_set():
                    k = r.choice(keys)
                    try:
                        v = c.get(k)
                        gen = c.last_generation
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            failures.append(repr(e))
                        continue
                    with lock:
                        seen.append((time.monotonic(), gen))
                        answers.append((k, gen, v))  # checked at the end: a publish is served before publish() returns

        threads = [threading.Thread(target=load) for _ in range(THREADS)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            for tag in ("beta", "gamma", "delta"):  # three publish + reload cycles
                new = publish(make_generation(tmp_path / f"{tag}.data", keys, tag), root, log=lambda m: None)
                tags[new] = tag
                proc.send_signal(signal.SIGHUP)
                # Reload is complete once every worker serves the new generation.
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    stats = [httpx.get(f"{url}/v1/stats") for _ in range(10)]
                    assert [r.status_code for r in stats] == [200] * 10, [r.text for r in stats if r.status_code != 200]
                    if {r.json()["generation"] for r in stats} == {new}:
                        break
                    time.sleep(0.1)
                switched = time.monotonic()
                time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert failures == []
    inconsistent = [(k, gen, v) for k, gen, v in answers if v is None or gen not in tags or v != f"{k[:8]} {tags[gen]}".encode()]
    assert inconsistent == []
    assert len(seen) > 1000
    assert {g for _, g in seen} == set(tags)  # both generations were served
    late = {g for t, g in seen if t > switched + 0.5}
    assert late == {new}


def test_a_reload_onto_a_damaged_table_is_refused_and_the_old_one_served(tmp_path):
    """A new worker that cannot open its table would fail to boot and gunicorn
    would stop the whole server; kv checks the table first and refuses the reload."""
    import os

    keys = [str(uuid.UUID(int=i, version=4)) for i in range(1, 50)]
    root = tmp_path / "root"
    good = publish(make_generation(tmp_path / "a.data", keys, "alpha"), root, log=lambda m: None)
    with running_server("--root", root, workers=2) as (url, proc):
        deadline = time.monotonic() + 20
        while len({fresh_get(f"{url}/v1/stats").json()["worker"] for _ in range(10)}) < 2:  # both have mapped the table
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.1)
        raw = (root / "generations" / f"{good}.kvt").read_bytes()
        (root / "generations" / "bad.kvt").write_bytes(raw[: len(raw) // 2])  # truncated
        os.symlink("generations/bad.kvt", root / ".current.tmp")
        os.replace(root / ".current.tmp", root / "current")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, "the server stopped: " + proc.stdout.read().decode(errors="replace")[-3000:]
        with Client(url) as c:
            for k in keys[:20]:
                assert c.get(k) == f"{k[:8]} alpha".encode() and c.last_generation == good
        pids = {fresh_get(f"{url}/v1/stats").json()["worker"] for _ in range(20)}
        assert len(pids) == 2
    log = proc.stdout.read().decode(errors="replace")
    assert "reload refused" in log and "bad.kvt" in log, log
