"""The unit's ExecStart command line, run as systemd would run it (systemd
itself does not run in a container): with a temporary publish root in place
of /var/lib/kv, a temporary directory in place of /run/kv, a free 127.0.0.1
port, the unit's Environment=, and a notify socket like systemd's. Then the
same under the parts of the unit's sandbox that can be rebuilt without systemd
(tests/unit_sandbox.py: system call filter, MemoryDenyWriteExecute, address
families, no capabilities, umask), and with the listening socket passed in the
way kv.socket passes it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, read_records
from serverutil import KV, stop, wait_ready
from unit_sandbox import service_settings

from kv.publish import publish

UNIT = ROOT / "deploy" / "kv.service"
EXAMPLE = ROOT / "example.data"


def test_kv_serve_supports_every_flag_the_unit_passes():
    """The unit's ExecStart flags exist (a failure here, not a skip of the
    whole module: a regression in kv serve must not hide the unit's tests)."""
    r = subprocess.run([KV, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in ("--root", "--bind", "--pid-file"):
        assert flag in r.stdout


def unit_values(name: str) -> list[str]:
    return [v for n, v in service_settings(UNIT.read_text()) if n == name]


def get(url: str) -> httpx.Response:
    """GET on a new connection, retried once on a connection closed without an
    answer, as kv.Client does: an old worker that is shutting down after a
    reload may close a connection it accepted but had not read yet. (Whether
    a reload can fail a request is the reload-under-load test's subject.)"""
    try:
        return httpx.get(url, timeout=5)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return httpx.get(url, timeout=5)


class Service:
    """The unit's ExecStart, with its paths and port replaced for a test."""

    def __init__(self, tmp_path: Path, root: Path, run_dir: Path, port: int):
        self.root, self.run_dir, self.port = root, run_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.notify_path = str(tmp_path / "notify.sock")

    def subst(self, text: str) -> str:
        return (
            text.replace("/opt/kv/venv/bin/kv", KV)
            .replace("/var/lib/kv", str(self.root))
            .replace("/run/kv", str(self.run_dir))
            .replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        )

    def argv(self) -> list[str]:
        (exec_start,) = unit_values("ExecStart")
        return shlex.split(self.subst(exec_start))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KV_", "PROMETHEUS_", "LISTEN_"))}
        for line in unit_values("Environment"):
            for item in shlex.split(line):
                k, v = item.split("=", 1)
                env[k] = self.subst(v)
        # What systemd adds for RuntimeDirectory=kv and Type=notify.
        env["RUNTIME_DIRECTORY"] = str(self.run_dir)
        env["NOTIFY_SOCKET"] = self.notify_path
        env["KV_WORKERS"] = "2"
        return env

    @contextlib.contextmanager
    def running(self, wrap: list[str] | None = None, **popen):
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(self.notify_path)
        notify.settimeout(0.1)
        self.messages: list[str] = []
        self.proc = subprocess.Popen(
            [*(wrap or []), *self.argv()], env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
        self._notify = notify
        try:
            wait_ready(self.url, self.proc)
            yield self
        except BaseException as e:
            stop(self.proc)
            out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            e.add_note(f"server output:\n{out}")
            raise
        finally:
            stop(self.proc)
            notify.close()

    def notifications(self) -> list[str]:
        with contextlib.suppress(OSError):
            while True:
                self.messages.append(self._notify.recv(4096).decode())
        return self.messages

    def reload(self) -> None:
        """The unit's ExecReload, with $MAINPID as systemd fills it in."""
        (cmd,) = unit_values("ExecReload")
        subprocess.run(shlex.split(cmd.replace("$MAINPID", str(self.proc.pid))), check=True, timeout=10)

    def wait_for_generation(self, generation: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A new connection for each request, so they spread over the workers.
            if {get(f"{self.url}/v1/stats").json()["generation"] for _ in range(8)} == {generation}:
                return
            time.sleep(0.1)
        raise AssertionError(f"generation {generation} not served everywhere after {timeout} s")


@pytest.fixture()
def example(tmp_path):
    """The repository's example.data (a generated stand-in if absent) and two versions of it."""
    if EXAMPLE.exists():
        records = read_records(EXAMPLE)
    else:
        from kv.gen import generate_file

        generate_file(10_000, tmp_path / "example.data", seed=1)
        records = read_records(tmp_path / "example.data")
    v2 = tmp_path / "v2.data"
    with open(v2, "wb") as f:
        for k, v in records:
            f.write(k.encode() + b" v2 " + v + b"\n")
    return EXAMPLE if EXAMPLE.exists() else tmp_path / "example.data", v2, records


def make_service(tmp_path, data) -> Service:
    root = tmp_path / "var-lib-kv"
    publish(data, root, log=lambda m: None)
    run_dir = tmp_path / "run-kv"
    run_dir.mkdir(mode=0o750)
    return Service(tmp_path, root, run_dir, free_port())


def check_serves_publish_reload_and_stop(svc: Service, records, v2: Path) -> None:
    key, value = records[123]
    r = httpx.get(f"{svc.url}/v1/keys/{key}")
    assert r.status_code == 200 and r.content == value
    assert httpx.get(f"{svc.url}/metrics").status_code == 200
    # Where `kv reload` finds the master under systemd (RuntimeDirectory=kv).
    assert int((svc.run_dir / "kv.pid").read_text()) == svc.proc.pid
    assert any("READY=1" in m for m in svc.notifications()), "Type=notify: the master must send READY=1"

    new = publish(v2, svc.root, log=lambda m: None)
    svc.reload()
    svc.wait_for_generation(new)
    r = httpx.get(f"{svc.url}/v1/keys/{key}")
    assert r.content == b"v2 " + value and r.headers["X-KV-Generation"] == new

    # kv reload, by the pid file, as an operator would.
    r = subprocess.run([KV, "reload", "--pid-file", str(svc.run_dir / "kv.pid")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "workers replaced" in r.stderr, r.stderr
    assert httpx.get(f"{svc.url}/v1/keys/{key}").content == b"v2 " + value

    svc.proc.send_signal(signal.SIGTERM)  # systemctl stop
    assert svc.proc.wait(30) == 0
    assert not (svc.run_dir / "kv.pid").exists()


def test_execstart_serves_publishes_reloads_and_stops(tmp_path, example):
    data, v2, records = example
    svc = make_service(tmp_path, data)
    with svc.running():
        check_serves_publish_reload_and_stop(svc, records, v2)


def test_execstart_works_inside_the_units_sandbox(tmp_path, example):
    """System call filter, MemoryDenyWriteExecute, address families, no
    capabilities: the server starts, serves, reloads and stops under them."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("needs systemd-analyze for the system call groups (apt-get install systemd)")
    if os.getuid() != 0:
        pytest.skip("dropping to the sandbox's identity needs root")
    data, v2, records = example
    svc = make_service(tmp_path, data)
    wrap = [sys.executable, str(ROOT / "tests" / "unit_sandbox.py"), str(UNIT), "--"]
    with svc.running(wrap=wrap):
        status = Path(f"/proc/{svc.proc.pid}/status").read_text()
        assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        assert int(re.search(r"^Seccomp:\s+(\d)", status, re.M).group(1)) == 2  # filter mode
        assert not (svc.root / "kv.pid").exists()  # pid file went to the runtime directory
        check_serves_publish_reload_and_stop(svc, records, v2)
    out = svc.proc.stdout.read().decode(errors="replace")
    assert "Operation not permitted" not in out and "Traceback" not in out, out


def test_socket_activation_uses_the_passed_socket(tmp_path, example):
    """kv.socket: systemd binds, passes the socket as fd 3 with LISTEN_FDS=1 and
    LISTEN_PID; gunicorn serves on it and ignores --bind."""
    data, _, records = example
    svc = make_service(tmp_path, data)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    bind_port, svc.port = svc.port, listener.getsockname()[1]
    svc.url = f"http://127.0.0.1:{svc.port}"
    argv = svc.argv()
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{bind_port}"
    fd = listener.fileno()
    shim = ["bash", "-c", f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "bash"]
    svc.argv = lambda: argv
    try:
        with svc.running(wrap=shim, pass_fds=(fd,)):
            key, value = records[7]
            assert httpx.get(f"{svc.url}/v1/keys/{key}").content == value
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{bind_port}/healthz")
    finally:
        listener.close()
