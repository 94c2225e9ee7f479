"""Prometheus metrics across gunicorn workers, and what a killed worker leaves."""

import os
import re
import signal
import socket
import time
import uuid

import httpx
from serverutil import fresh_get, running_server, worker_pids


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(url, name, want, timeout=3.0, **labels):
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{url}/metrics").text
        got = metric(text, name, **labels)
        if got == want or time.monotonic() > deadline:
            return got, text
        time.sleep(0.05)


def test_counts_add_up_across_workers_and_survive_a_killed_worker(gen_table, tmp_path):
    table, records = gen_table
    metrics_dir = tmp_path / "metrics"
    with running_server(table, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as (url, proc):
        n = 50
        for k, _ in records[:n]:
            assert fresh_get(f"{url}/v1/keys/{k}").status_code == 200
        for _ in range(5):
            assert fresh_get(f"{url}/v1/keys/{uuid.uuid4()}").status_code == 404
        # Each worker flushes its counts every 50 ms: wait until both have.
        hits, text = wait_for(url, "kv_lookups_total", n, outcome="hit")
        assert hits == n
        misses, text = wait_for(url, "kv_lookups_total", 5, outcome="miss")
        assert misses == 5
        assert metric(text, "kv_requests_total", route="/v1/keys/{key}", status="200") == n
        assert metric(text, "kv_request_duration_seconds_count", route="/v1/keys/{key}") >= n
        assert metric(text, "kv_table_keys") == len(records)
        assert metric(text, "kv_workers") == 2
        stats = httpx.get(f"{url}/v1/stats").json()
        assert stats["hits"] == n and stats["misses"] == 5

        time.sleep(0.2)  # let both workers flush
        victim = worker_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pids = worker_pids(proc.pid)
            if len(pids) == 2 and victim not in pids:
                break
            time.sleep(0.05)
        httpx.get(f"{url}/readyz")
        hits, text = wait_for(url, "kv_lookups_total", n, outcome="hit")
        assert hits == n  # the dead worker's counts are still in the total
        workers, text = wait_for(url, "kv_workers", 2)
        assert workers == 2  # the dead worker's live gauge is gone, the new one counted
        assert not re.search(rf'pid="{victim}"', text)
        # The dead worker's files were folded into *_retired.db: one file set per live worker.
        names = sorted(p.name for p in metrics_dir.iterdir())
        assert not [n for n in names if f"_{victim}.db" in n], names
        assert "counter_retired.db" in names and "histogram_retired.db" in names


def test_a_client_gone_mid_body_is_counted_499_not_500(gen_table, tmp_path):
    """A batch whose client closes the connection halfway through the body:
    no response can go out, and /metrics counts it under status 499."""
    table, _ = gen_table
    with running_server(table, workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")}) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b'POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"keys": [')
            time.sleep(0.2)  # the worker is reading the body
        gone, text = wait_for(url, "kv_requests_total", 1, route="/v1/batch", status="499")
        assert gone == 1
        assert metric(text, "kv_requests_total", route="/v1/batch", status="500") == 0
