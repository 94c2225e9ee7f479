"""`kv serve PATH | --root DIR`: serve a table with gunicorn and uvicorn workers.

PATH is a data file or a table. Given a data file, the table is built next to
it (DATA.kvt), or into --table-dir (env KV_TABLE_DIR) when the data lives
somewhere read-only such as a container's volume, unless one is there whose
recorded source (name, size, mtime) and build options match, so a restart does
not rebuild. `--root DIR` serves
DIR/current, the generation `kv publish` switched to; SIGHUP (systemctl reload)
starts fresh workers on whatever `current` then points to.

This process becomes the gunicorn master (pid file, signals, as usual); each
worker maps the table itself, read-only.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .errors import DataFormatError, TableCorrupt
from .gunicorn_conf import available_cpus


def add_arguments(p):
    p.add_argument("path", nargs="?", metavar="PATH", help="data file or table (.kvt) to serve")
    p.add_argument("--root", metavar="DIR", help="serve DIR/current (see kv publish) instead of PATH")
    p.add_argument("--bind", default=os.environ.get("KV_BIND", "127.0.0.1:8000"), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8000; env KV_BIND)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("KV_WORKERS", 0)) or available_cpus(),
                   help="worker processes (default: the CPUs this process may use, affinity and cgroup quota "
                        "counted; env KV_WORKERS)")
    p.add_argument("--keepalive", type=int, default=int(os.environ.get("KV_KEEPALIVE", 5)), metavar="SECONDS",
                   help="close a connection idle this long, or whose request head is not complete this long "
                        "after its first byte (default 5; env KV_KEEPALIVE)")
    p.add_argument("--max-batch", type=int, default=int(os.environ.get("KV_MAX_BATCH", 1000)),
                   help="most keys in one batch request (default 1000)")
    p.add_argument("--pid-file", default=os.environ.get("KV_PID_FILE"),
                   help="write the master pid here (default: $RUNTIME_DIRECTORY/kv.pid under systemd, else ROOT/kv.pid with --root)")
    p.add_argument("--log-level", default=os.environ.get("KV_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"])
    p.add_argument("--config", default=os.environ.get("KV_GUNICORN_CONFIG") or default_config(), metavar="FILE",
                   help="gunicorn configuration file (default: deploy/gunicorn.conf.py of this checkout when present, "
                        "else the packaged kv/gunicorn_conf.py; env KV_GUNICORN_CONFIG). --bind, --workers, "
                        "--keepalive, --log-level and --pid-file override it")
    p.add_argument("--table-dir", default=os.environ.get("KV_TABLE_DIR") or None, metavar="DIR",
                   help="when building: write the table built from a data file into DIR (created if missing) instead of "
                        "beside the data file, e.g. when the data is on a read-only volume (env KV_TABLE_DIR)")
    p.add_argument("--skip-invalid", action="store_true", help="when building: skip malformed lines (reported)")
    p.add_argument("--on-duplicate", choices=["error", "first", "last"], default="error", help="when building: duplicate key policy")
    p.add_argument("--strip-cr", action="store_true", help="when building: remove the CR of CR LF line endings")


def default_config() -> str | None:
    """deploy/gunicorn.conf.py beside the package in a checkout (an editable
    install), so editing it changes what `kv serve` runs; None (the packaged
    kv/gunicorn_conf.py) in an installed kv."""
    path = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
    return str(path) if path.is_file() else None


def fail(message: str) -> int:
    print(f"kv serve: {message}", file=sys.stderr)
    return 1


def is_table(path: Path) -> bool:
    from .format import MAGIC

    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def table_for_data(data: Path, options: dict, table_dir: str | None = None) -> Path:
    """The table for a data file (beside it, or in `table_dir`): reuse a matching one, else build it."""
    from .build import build_options, build_table, default_table_path
    from .table import open_table

    table = default_table_path(data)
    if table_dir:
        os.makedirs(table_dir, exist_ok=True)
        table = Path(table_dir) / table.name
    st = data.stat()
    wanted = build_options(**options)
    if table.exists():
        try:
            with open_table(table) as t:
                src, opts = t.meta.get("source", {}), t.meta.get("options", {})
                same_source = (src.get("name"), src.get("size"), src.get("mtime_ns")) == (data.name, st.st_size, st.st_mtime_ns)
                if same_source and opts == wanted:
                    print(f"kv serve: reusing {table} (built from this {data.name}, same options)", file=sys.stderr)
                    return table
                why = "the data file changed since it was built" if not same_source else f"it was built with other options ({opts})"
                print(f"kv serve: rebuilding {table}: {why}", file=sys.stderr)
        except (TableCorrupt, OSError) as e:
            print(f"kv serve: rebuilding {table}: {e}", file=sys.stderr)
    report = build_table(data, table, **options)
    print(report.summary(), file=sys.stderr)
    return table


def resolve(args) -> Path:
    if args.root:
        if args.path:
            raise ValueError("give PATH or --root, not both")
        current = Path(args.root) / "current"
        if not current.exists():
            raise FileNotFoundError(f"{current} does not exist; publish a table first: kv publish DATA --root {args.root}")
        return current
    if not args.path:
        raise ValueError("nothing to serve: give a data file, a table, or --root DIR")
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; to serve a publish root use --root {path}")
    if is_table(path):
        return path
    options = {"skip_invalid": args.skip_invalid, "on_duplicate": args.on_duplicate, "strip_cr": args.strip_cr}
    return table_for_data(path, options, getattr(args, "table_dir", None))


def run(args) -> int:
    from .table import open_table

    try:
        table = resolve(args)
        with open_table(table) as t:  # refuse to start on a table no worker could serve
            desc = f"{t.path} ({len(t):,} records, generation {t.generation})"
    except (FileNotFoundError, PermissionError, IsADirectoryError, TableCorrupt, DataFormatError, ValueError) as e:
        return fail(f"cannot serve: {e}")
    except OSError as e:
        return fail(f"cannot serve {e.filename or ''}: {e.strerror or e}")
    if args.workers < 1:
        return fail("--workers must be at least 1")
    if args.keepalive < 1:
        return fail("--keepalive must be at least 1 second")

    env = os.environ
    env["KV_TABLE"] = str(Path(table).absolute())
    env["KV_MAX_BATCH"] = str(args.max_batch)
    env["KV_LOG_LEVEL"] = args.log_level
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        base = env.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
        d = tempfile.mkdtemp(prefix="kv-metrics-", dir=base)
        env["PROMETHEUS_MULTIPROC_DIR"] = d
        env["KV_OWN_METRICS_DIR"] = d
    pid_file = args.pid_file
    if not pid_file and env.get("RUNTIME_DIRECTORY"):
        pid_file = os.path.join(env["RUNTIME_DIRECTORY"].split(":")[0], "kv.pid")
    if not pid_file and args.root and os.access(args.root, os.W_OK):
        pid_file = os.path.join(args.root, "kv.pid")

    try:
        settings = gunicorn_settings(args.config)
    except Exception as e:  # noqa: BLE001 - the user's file: any error in it is theirs to see, in one line
        return fail(f"--config {args.config}: {type(e).__name__}: {e}")
    _raise_open_file_limit()
    print(f"kv serve: serving {desc} on http://{args.bind} with {args.workers} worker(s)", file=sys.stderr)
    GunicornServer(args.bind, args.workers, args.log_level, pid_file, args.keepalive, settings).run()
    return 0


def gunicorn_settings(config: str | None) -> dict:
    """The names a gunicorn config file defines (settings and hooks; gunicorn
    ignores the rest): `config`, or the packaged kv/gunicorn_conf.py."""
    if config is None:
        from . import gunicorn_conf

        return vars(gunicorn_conf)
    if not os.path.isfile(config):
        raise FileNotFoundError("no such file")
    import runpy

    return runpy.run_path(config)


def _raise_open_file_limit() -> None:
    """Each connection is a file descriptor: lift the soft limit to the hard one
    (systemd's LimitNOFILE sets both), so 1,000 idle clients don't exhaust 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _gunicorn_base():
    from gunicorn.app.base import BaseApplication

    return BaseApplication


class GunicornServer(_gunicorn_base()):
    """gunicorn with kv's settings (a gunicorn config file, by default
    deploy/gunicorn.conf.py or kv/gunicorn_conf.py), in this process."""

    def __init__(self, bind: str, workers: int, log_level: str, pid_file: str | None, keepalive: int = 5,
                 settings: dict | None = None):
        self.overrides = {"bind": [bind], "workers": workers, "loglevel": log_level, "keepalive": keepalive}
        if pid_file:
            self.overrides["pidfile"] = pid_file
        self.settings = gunicorn_settings(None) if settings is None else settings
        super().__init__()

    def load_config(self):
        for name, value in self.settings.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)
        for name, value in self.overrides.items():
            self.cfg.set(name, value)

    def load(self):
        from .app import create_app

        return create_app()

    def run(self):
        from gunicorn.arbiter import Arbiter

        class KVArbiter(Arbiter):
            def handle_hup(self):
                # A new worker that cannot open the table fails to boot, and
                # gunicorn then stops the whole server: check the table first
                # and keep serving the open one if the new one is bad.
                problem = table_problem(os.environ["KV_TABLE"])
                if problem:
                    self.log.error("reload refused, still serving the table the workers have open: %s", problem)
                    return
                super().handle_hup()

        try:
            KVArbiter(self).run()
        except RuntimeError as e:
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.exit(1)


def table_problem(path: str) -> str | None:
    """Why the table at `path` cannot be served (O(1): header checks only), or None."""
    from .table import open_table

    try:
        open_table(path).close()
    except (OSError, TableCorrupt) as e:
        target = os.path.realpath(path)
        return str(e) + (f" ({path} points at {target})" if target != os.path.abspath(path) else "")
    return None
