"""gunicorn, as `kv serve` runs it in-process: the listening sockets bound
before gunicorn starts (kv/serve.py announces only once they accept), the
table opened once by the master and inherited by every worker, the master's
metrics server, and the arbiter's reload rules (new workers serve before old
ones stop; a reload onto a bad table or token file is refused)."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from . import settings
from .errors import ServeError
from .publish import table_problem

if TYPE_CHECKING:
    from .http.app import KVApp


def open_table_fd(path: str) -> int:
    """The master's descriptor of the table its workers map (inherited at
    fork): a worker that replaces a crashed one maps the same table even if
    the file was deleted or made unreadable since. Reopened on SIGHUP."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def _raise_open_file_limit() -> None:
    """Each connection is a file descriptor: lift the soft limit to the hard one
    (systemd's LimitNOFILE sets both), so 1,000 idle clients don't exhaust 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen(cfg: Any, log: Any) -> list[Any]:
    """Bind and listen on each configured address, once, before gunicorn
    starts; an address in use is a ServeError. [] when the sockets come from
    elsewhere (systemd's LISTEN_FDS, a re-exec's GUNICORN_FD, fd:// binds) or
    SO_REUSEPORT lets several servers share them: gunicorn then does as usual.

    gunicorn itself retries a busy address 5 times, 1 s apart, logging each
    failure, before it exits; and it prints "Listening at" only after that."""
    from gunicorn import sock

    if os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD") or cfg.reuse_port:
        return []
    if any(isinstance(addr, int) for addr in cfg.address):
        return []
    listeners = []
    try:
        for addr in cfg.address:
            # sock._sock_type: TCPSocket, TCP6Socket or UnixSocket for an address (gunicorn 20 to 27).
            listeners.append(sock._sock_type(addr)(addr, cfg, log))
    except OSError as e:
        for lnr in listeners:
            lnr.close()
        where = addr if isinstance(addr, str) else ":".join(map(str, addr))
        hint = " (another server is listening there; choose another with --bind or KV_BIND)" if e.errno == errno.EADDRINUSE else ""
        raise ServeError(f"cannot listen on {where}: {e.strerror or e}{hint}") from None
    return listeners


def start_metrics_server(bind: str) -> None:
    """/metrics on its own address, from the master (the exporter layout):
    prometheus_client's server in a thread, summing every worker's file in
    the multiprocess directory. A busy address is a ServeError."""
    from prometheus_client import start_http_server

    from .metrics import registry

    host, _, port = bind.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=registry())
    except OSError as e:
        raise ServeError(f"cannot serve /metrics on {bind}: {e.strerror or e}") from None


class KVArbiter(Arbiter):
    announce: Callable[[str, int], None] | None = None
    metrics_bind: str | None = None

    def start(self) -> None:
        if self.metrics_bind:  # first: a busy address stops kv serve before anything else starts
            start_metrics_server(self.metrics_bind)
        super().start()  # binds (here: adopts the sockets of listen()), writes the pid file, runs when_ready
        if self.metrics_bind:
            self.log.info("Serving /metrics at: http://%s/metrics", self.metrics_bind)
        if self.announce:
            self.announce(",".join(str(lnr) for lnr in self.LISTENERS), self.num_workers)

    def handle_hup(self) -> None:
        # A new worker that cannot open the table fails to boot, and
        # gunicorn then stops the whole server: check the table (and the
        # token file) first and keep serving the open one if the new one is bad.
        env = os.environ
        problem = table_problem(env["KV_TABLE"])
        tokens = env.get(settings.READ_TOKEN_FILE.env)
        if not problem and tokens:
            from .http.auth import TokenFileError, read_token_file

            try:
                read_token_file(tokens)
            except TokenFileError as e:
                problem = str(e)
        if problem:
            self.log.error("reload refused, still serving the table the workers have open: %s", problem)
            return
        old = env.get("KV_TABLE_FD")
        try:
            env["KV_TABLE_FD"] = str(open_table_fd(env["KV_TABLE"]))  # `current` may point elsewhere now
        except OSError as e:  # gone since the check
            self.log.error("reload refused, still serving the table the workers have open: %s", e)
            return
        try:
            super().handle_hup()
        finally:
            if old and old.isdigit():
                os.close(int(old))  # old workers have their own descriptors and maps

    # -- reload: new workers accept before old ones stop -----------------------------------------
    # gunicorn (23) reload() forks the new workers and, in the same breath,
    # manage_workers() sends SIGTERM to the oldest beyond `workers`: the old
    # workers stop accepting while the new ones still import and map, and
    # connections wait (0.8 s measured). Here the old ones are stopped only
    # once the new ones serve: a worker's first heartbeat (kv/worker.py,
    # rule 7) changes its tmp file's mtime from the one it had at fork.

    def spawn_worker(self) -> int:
        pid = super().spawn_worker()  # returns only in the master
        worker = self.WORKERS.get(pid)
        if worker is not None:
            worker.kv_born = worker.tmp.last_update()
        return pid

    def manage_workers(self) -> None:
        if len(self.WORKERS) > self.num_workers:
            self.wait_for_new_workers()
        super().manage_workers()

    def wait_for_new_workers(self) -> None:

        youngest = sorted(self.WORKERS.values(), key=lambda w: w.age)[-self.num_workers :]
        deadline = time.monotonic() + max(self.timeout, 1)
        while time.monotonic() < deadline:
            booting = [w for w in youngest if w.pid in self.WORKERS and w.tmp.last_update() == getattr(w, "kv_born", None)]
            if not booting:
                return
            time.sleep(0.02)
            self.reap_workers()
        self.log.warning("new workers not serving after %s s; stopping the old ones anyway", self.timeout)


class GunicornServer(BaseApplication):
    """gunicorn with kv's settings, in this process: the config file's names
    (`file`), then `overrides` (kv serve's resolved settings) on top."""

    def __init__(
        self,
        file: dict[str, Any],
        overrides: dict[str, Any],
        announce: Callable[[str, int], None] | None = None,
        metrics_bind: str | None = None,
    ):
        self.file = file
        self.overrides = overrides
        self.announce = announce
        self.metrics_bind = metrics_bind
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.file.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)
        for name, value in self.overrides.items():
            self.cfg.set(name, value)

    def load(self) -> KVApp:
        from .app import create_app

        return create_app()

    def run(self) -> None:
        arbiter = KVArbiter(self)
        arbiter.announce = self.announce
        arbiter.metrics_bind = self.metrics_bind
        arbiter.LISTENERS = listen(self.cfg, arbiter.log)
        try:
            arbiter.run()
        except RuntimeError as e:
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.exit(1)
