"""gunicorn settings for kv (deploy/gunicorn.conf.py imports these).

`kv serve` runs gunicorn in-process with these settings; to run gunicorn by
hand: KV_TABLE=table.kvt gunicorn -c deploy/gunicorn.conf.py 'kv.app:create_app()'
"""

from __future__ import annotations

import os
import shutil
import ssl
from typing import TYPE_CHECKING

from kv.settings import (  # noqa: F401 (available_cpus: kept importable here)
    BIND,
    CA_CERTS,
    CERTFILE,
    KEEPALIVE,
    KEYFILE,
    LOG_LEVEL,
    WORKERS,
    available_cpus,
)

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# bind, workers, keepalive and loglevel: the KV_* variable, else kv's default
# (both declared in kv/settings.py). A copy of this file may set them; `kv
# serve`'s flags and KV_* variables still take precedence over the file.
worker_class = "kv.worker.KVWorker"  # uvicorn: uvloop event loop, httptools parser (see kv/worker.py)
bind = [BIND.value()]
workers = WORKERS.value()
preload_app = False  # every worker maps the table itself, after fork
keepalive = KEEPALIVE.value()  # seconds an idle keep-alive connection stays open
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 15  # on reload or stop, in-flight requests get this long; keepalive must stay below it (kv/worker.py)
backlog = 2048
accesslog = None  # per-request logs cost more than the lookup; use /metrics
errorlog = "-"
loglevel = LOG_LEVEL.value()
proc_name = "kv"
control_socket_disable = True  # reload and stop go through signals (systemd, kv reload)
# TLS (docs/SECURITY.md): KV_CERTFILE and KV_KEYFILE, and KV_CA_CERTS for
# mutual TLS (a client certificate signed by that CA is required). `kv serve
# --certfile/--keyfile/--ca-certs` override these and check the files first.
certfile = CERTFILE.value()
keyfile = KEYFILE.value()
ca_certs = CA_CERTS.value()
cert_reqs = ssl.CERT_REQUIRED if ca_certs else ssl.CERT_NONE
# uvicorn parses HTTP (httptools) itself; these bound what it accepts is done in
# kv.app.FastPath (path, header and body sizes).


def on_starting(server: Arbiter) -> None:
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):  # stale files of an earlier run would add up
            if name.endswith(".db"):
                os.unlink(os.path.join(d, name))


def child_exit(server: Arbiter, worker: Worker) -> None:
    from kv.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d and os.environ.get("KV_OWN_METRICS_DIR") == d:
        shutil.rmtree(d, ignore_errors=True)
