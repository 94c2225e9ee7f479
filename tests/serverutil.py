"""Start the real server (`kv serve`) on a free 127.0.0.1 port for a test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import free_port

KV = str(Path(sys.executable).parent / "kv")


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
    import ssl

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
