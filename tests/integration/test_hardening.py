"""Issue 15: a regression test for each fix of what an attack on the running
server found (numbers as in the issue)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, write_records
from serverutil import KV, running_server, stop, wait_ready, worker_pids

from kv import metrics
from kv.http.fastpath import MAX_HEADERS, MAX_PATH
from kv.publish import PublishError, generation_path, publish, read_history
from kv.worker import HEAD_LIMIT


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def read_all(s: socket.socket, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def read_response(s: socket.socket, timeout: float = 5.0) -> bytes:
    """One response with a Content-Length (b"" when the server closed or reset first)."""
    s.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return buf
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    except ConnectionResetError:
        return buf


@pytest.fixture(scope="module")
def server(gen_table):
    table, records = gen_table
    with running_server(table, workers=2) as (url, proc):
        yield url, proc, records


# -- 2. size limits while the head arrives ---------------------------------------------------


def test_head_limit_covers_the_path_and_header_limits():
    assert HEAD_LIMIT > MAX_PATH + MAX_HEADERS + 4096


@pytest.mark.parametrize("what, status", [("url", b"414"), ("header", b"431")])
def test_a_streamed_head_is_refused_once_past_the_limit_and_memory_stays_bounded(server, what, status):
    url, proc, _ = server
    before = {p: rss_kb(p) for p in worker_pids(proc.pid)}
    s = connect(url)
    s.sendall(b"GET /v1/keys/" if what == "url" else b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
    sent, refused = 0, False
    chunk = b"a" * 16384
    try:
        while sent < 8 * 1024 * 1024:  # 8 MB, far past the limit: the server must stop reading long before
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        refused = True
    answer = read_all(s)
    s.close()
    assert refused or answer, "the server read 8 MB of one request head"
    if answer:
        assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower()
    assert sent < 8 * 1024 * 1024
    after = {p: rss_kb(p) for p in worker_pids(proc.pid)}
    assert all(after.get(p, 0) - kb < 20_000 for p, kb in before.items()), (before, after)
    assert httpx.get(url + "/healthz").status_code == 200


def test_a_body_larger_than_the_head_limit_is_not_taken_for_a_head(server):
    url, _, records = server
    k, v = records[0]
    body = b'{"keys": ["' + k.encode() + b'"]}' + b" " * (HEAD_LIMIT + 30_000)  # within max_body
    for _ in range(3):
        r = httpx.post(f"{url}/v1/batch", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["values"] == {k: v.decode()}


def test_a_head_just_under_the_limit_still_gets_the_ordinary_431(server):
    url = server[0]
    r = httpx.get(url + "/healthz", headers={f"x-h{i}": "v" * 1000 for i in range(40)})
    assert r.status_code == 431


def test_pipelined_requests_beyond_the_head_limit_in_one_write_are_all_answered(server):
    url, _, records = server
    k = records[0][0]
    one = f"GET /v1/keys/{k} HTTP/1.1\r\nHost: x\r\nX-Pad: {'p' * 900}\r\n\r\n".encode()
    n = (2 * HEAD_LIMIT) // len(one) + 1
    s = connect(url)
    s.sendall(one * n + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = read_all(s)
    s.close()
    assert answer.count(b"HTTP/1.1 200") == n + 1


# -- 3. a replacement worker maps the table its siblings serve --------------------------------


def test_a_worker_replaced_after_the_table_was_deleted_serves_it(gen_data, tmp_path):
    data, records = gen_data
    table = tmp_path / "t.kvt"
    subprocess.run([KV, "build", str(data), "-o", str(table)], check=True, capture_output=True, timeout=120)
    with running_server(table, workers=2) as (url, proc):
        table.unlink()
        victim = worker_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = worker_pids(proc.pid)
            if len(pids) == 2 and victim not in pids:
                break
            time.sleep(0.1)
        time.sleep(1.5)
        assert proc.poll() is None, proc.stdout.read().decode()
        assert len(worker_pids(proc.pid)) == 2
        k, v = records[5]
        for _ in range(20):
            with httpx.Client(timeout=5) as c:
                assert c.get(f"{url}/v1/keys/{k}").content == v


def test_publish_and_sighup_still_switch_to_a_new_table(tmp_path):
    a = write_records(tmp_path / "a.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"alpha")])
    b = write_records(tmp_path / "b.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"beta")])
    root = tmp_path / "root"
    publish(a, root, log=lambda m: None)
    with running_server("--root", root, workers=1) as (url, proc):
        key_url = f"{url}/v1/keys/3479d894-3271-4935-88cf-a06f3cbb80a5"
        assert httpx.get(key_url).content == b"alpha"
        publish(b, root, log=lambda m: None)
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(key_url).content != b"beta" and time.monotonic() < deadline:
            time.sleep(0.2)
        if httpx.get(key_url).content != b"beta":
            stop(proc)
            pytest.fail("still serving the old table 30 s after SIGHUP:\n" + proc.stdout.read().decode(errors="replace")[-3000:])


# -- 4. workers die with their master ---------------------------------------------------------


def test_sigkill_of_the_master_frees_the_port_and_a_new_server_starts(gen_table):
    table, _ = gen_table
    with running_server(table, workers=2) as (url, proc):
        workers = worker_pids(proc.pid)
        port = int(url.rsplit(":", 1)[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[1][:3] for p in workers
        ):
            time.sleep(0.1)
        alive = [p for p in workers if Path(f"/proc/{p}").exists()]
        assert not alive or all(" Z " in Path(f"/proc/{p}/stat").read_text() for p in alive), "orphan workers still run"
        again = subprocess.Popen(
            [KV, "serve", str(table), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(url, again, 30)
        finally:
            stop(again)


# -- 5. reload: new workers accept before the old ones stop ------------------------------------


def test_sighup_does_not_stall_connections(server):
    url, proc, records = server
    k = records[0][0]
    worst, stop_ = [0.0], threading.Event()

    def load():
        while not stop_.is_set():
            t0 = time.monotonic()
            with httpx.Client(timeout=10) as c:  # a new connection each time: what waits on accept shows
                c.get(f"{url}/v1/keys/{k}")
            worst[0] = max(worst[0], time.monotonic() - t0)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        worst[0] = 0.0
        time.sleep(2.0)
        baseline = worst[0]  # what the machine's load alone costs a request (it is shared)
        old = worker_pids(proc.pid)
        worst[0] = 0.0
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while set(worker_pids(proc.pid)) & set(old) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop_.set()
        for t in threads:
            t.join()
    assert worst[0] < 0.5 + baseline, f"a connection waited {worst[0]:.2f} s during the reload ({baseline:.2f} s before it)"


# -- 6. a paused worker answers what arrived during the pause -----------------------------------


def test_a_request_sent_while_the_worker_was_stopped_is_answered(gen_table):
    table, records = gen_table
    k, v = records[0]
    with running_server(table, "--keepalive", "1", workers=1) as (url, proc):
        (worker,) = worker_pids(proc.pid)
        s = connect(url)
        request = f"GET /v1/keys/{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        s.sendall(request)
        first = read_response(s)
        assert first.startswith(b"HTTP/1.1 200")
        os.kill(worker, signal.SIGSTOP)
        try:
            time.sleep(0.3)
            s.sendall(request)
            time.sleep(1.7)  # past keepalive
        finally:
            os.kill(worker, signal.SIGCONT)
        answer = read_response(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(v)


# -- 8. a refused body closes the connection ----------------------------------------------------


def test_a_413_after_expect_100_continue_closes_the_connection(server):
    url = server[0]
    s = connect(url)
    s.sendall(
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
    )
    answer = read_all(s, 5)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


def test_the_request_after_a_refused_body_is_never_swallowed(server):
    url = server[0]
    s = connect(url)
    s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_all(s, 5)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413")
    assert answer.count(b"HTTP/1.1") == 1  # closed: the GET was not parsed out of the body


def test_a_client_still_sending_a_refused_body_reads_its_413_not_a_reset(server):
    url = server[0]
    for _ in range(5):
        s = connect(url)
        s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n")
        time.sleep(0.2)  # the 413 is written and the response done
        for _ in range(12):  # still sending after it: the server drains (up to 1 MiB) before it closes
            s.sendall(b"x" * 65536)
            time.sleep(0.01)
        s.shutdown(socket.SHUT_WR)
        answer = read_all(s, 5)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


def test_a_streamed_head_gets_its_431_when_the_client_reads_after_sending(server):
    url = server[0]
    for _ in range(5):
        s = connect(url)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        answer = read_all(s, 5)
        s.close()
        assert answer.startswith(b"HTTP/1.1 431")


# -- 9. disk full while publishing, at the history step ------------------------------------------


def test_disk_full_at_the_history_step_names_file_and_step_and_cleans_up(tmp_path, monkeypatch):
    a = write_records(tmp_path / "a.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"alpha")])
    b = write_records(tmp_path / "b.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"beta")])
    root = tmp_path / "root"
    first = publish(a, root, log=lambda m: None)
    real_fsync = os.fsync

    def fsync(fd):
        if ".history.json.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(PublishError) as e:
        publish(b, root, log=lambda m: None)
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(e.value)
    assert "history.json" in message and "recording generation" in message and "No space left" in message
    assert not list(root.glob(".history.json.tmp-*"))
    assert sorted(p.name for p in (root / "generations").iterdir()) == [generation_path(root, first).name]
    assert read_history(root) == [first] and os.readlink(root / "current").endswith(f"{first}.kvt")


def test_leftover_history_temporaries_are_removed_by_the_next_publish(tmp_path):
    a = write_records(tmp_path / "a.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"alpha")])
    root = tmp_path / "root"
    publish(a, root, log=lambda m: None)
    (root / ".history.json.tmp-99999").write_text("{")
    b = write_records(tmp_path / "b.data", [("3479d894-3271-4935-88cf-a06f3cbb80a5", b"beta")])
    publish(b, root, log=lambda m: None)
    assert not list(root.glob(".history.json.tmp-*"))


# -- 10. smaller ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_batch_below_one_is_refused(gen_table, value):
    table, _ = gen_table
    r = subprocess.run(
        [KV, "serve", str(table), "--bind", f"127.0.0.1:{free_port()}", "--max-batch", value], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "--max-batch" in r.stderr and "at least 1" in r.stderr
    r = subprocess.run(
        [KV, "serve", str(table), "--bind", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, KV_MAX_BATCH=value),
    )
    assert r.returncode == 2 and "KV_MAX_BATCH" in r.stderr


def test_lookups_by_worker_lists_only_live_workers(server):
    url, proc, records = server
    for _ in range(20):
        with httpx.Client() as c:
            c.get(f"{url}/v1/keys/{records[0][0]}")
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    by_worker = httpx.get(f"{url}/v1/stats").json()["lookups_by_worker"]
    live = {str(p) for p in worker_pids(proc.pid)}
    assert str(proc.pid) not in by_worker
    assert set(by_worker) - {"retired"} <= live
