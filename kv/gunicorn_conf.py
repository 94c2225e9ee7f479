"""gunicorn settings for kv (deploy/gunicorn.conf.py imports these).

`kv serve` runs gunicorn in-process with these settings; to run gunicorn by
hand: KV_TABLE=table.kvt gunicorn -c deploy/gunicorn.conf.py 'kv.app:create_app()'
"""

import os
import shutil



def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, and in a container its
    cgroup v2 CPU quota (cpu.max), not the host's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


worker_class = "kv.worker.KVWorker"  # uvicorn: uvloop event loop, httptools parser (see kv/worker.py)
bind = [os.environ.get("KV_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("KV_WORKERS", 0)) or available_cpus()
preload_app = False  # every worker maps the table itself, after fork
keepalive = 5  # seconds an idle keep-alive connection stays open
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 15  # on reload or stop, in-flight requests get this long
backlog = 2048
accesslog = None  # per-request logs cost more than the lookup; use /metrics
errorlog = "-"
loglevel = os.environ.get("KV_LOG_LEVEL", "info")
proc_name = "kv"
control_socket_disable = True  # reload and stop go through signals (systemd, kv reload)
# uvicorn parses HTTP (httptools) itself; these bound what it accepts is done in
# kv.app.FastPath (path, header and body sizes).


def on_starting(server):
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):  # stale files of an earlier run would add up
            if name.endswith(".db"):
                os.unlink(os.path.join(d, name))


def child_exit(server, worker):
    from kv.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if d and os.environ.get("KV_OWN_METRICS_DIR") == d:
        shutil.rmtree(d, ignore_errors=True)
