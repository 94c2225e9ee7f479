"""Start the real server (`kv serve`) on a free 127.0.0.1 port for a test, and
a real nginx in front of servers (`nginx_front`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

KV = str(Path(sys.executable).parent / "kv")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx not installed (make test installs it)")


@contextlib.contextmanager
def running_server(
    *args: str,
    workers: int = 2,
    env: dict | None = None,
    timeout: float = 30.0,
    log_level: str = "warning",
    https: bool = False,
    cacert=None,
    client_cert=None,
):
    """Run `kv serve ARGS --workers N` until the block ends; yields (url, proc).
    The whole process group is terminated at the end, even on failure. With
    `https`, readiness is asked over TLS, verified with `cacert` (and
    `client_cert`, a (cert, key) pair, for a server that requires one)."""
    port = free_port()
    cmd = [KV, "serve", *map(str, args), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", log_level]
    full_env = dict(os.environ, **(env or {}))
    if "PROMETHEUS_MULTIPROC_DIR" not in (env or {}):
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # kv serve makes its own
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout, verify=tls_context(cacert, client_cert) if https else True)
        yield url, proc
    finally:
        stop(proc)


def tls_context(cacert, client_cert=None):
    ctx = ssl.create_default_context(cafile=str(cacert))
    if client_cert:
        ctx.load_cert_chain(*map(str, client_cert))
    return ctx


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0, verify=True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"kv serve exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url + "/readyz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} not ready after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_pids(master: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                out.append(int(d.name))
    return sorted(out)


def fresh_get(url: str, **kw) -> httpx.Response:
    """One request on a new connection (so successive calls spread over workers)."""
    with httpx.Client(timeout=5) as c:
        return c.get(url, **kw)


def start_replica(table: str | os.PathLike, port: int) -> subprocess.Popen:
    """`kv serve TABLE` with 1 worker on 127.0.0.1:PORT, once ready (a shard
    replica behind nginx_front); end it with stop(proc)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [KV, "serve", str(table), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return proc


# The main configuration around the http-level one `kv deploy nginx` renders
# (kv.conf): every file nginx writes stays in the test's directory.
NGINX_CONF = """
error_log {d}/error.log warn;
pid {d}/nginx.pid;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    include {d}/kv.conf;
}}
"""


@contextlib.contextmanager
def nginx_front(d: Path, conf: str, url: str, verify: ssl.SSLContext | bool = True) -> Iterator[None]:
    """Run a real nginx until the block ends, with `conf` (what `kv deploy
    nginx` renders, listening at `url`) as D/kv.conf and all its files in D:
    checked with `nginx -t`, started, ready once `url`/v1/shards answers 200
    (asked with `verify`; 10 s at most), stopped gracefully (SIGQUIT) at the end."""
    (d / "kv.conf").write_text(conf)
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d))
    check = subprocess.run([NGINX, "-t", "-p", str(d), "-c", str(d / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/shards", verify=verify).status_code == 200:
                    break
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
