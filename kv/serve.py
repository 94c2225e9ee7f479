"""Serve a table with gunicorn and uvicorn workers (`kv serve`, whose
arguments are in kv/commands/serve.py).

PATH is a data file or a table. Given a data file, the table is built next to
it (DATA.kvt), or in --table-dir (KV_TABLE_DIR) when the data is read-only,
unless one built from this same file (recorded name, size, mtime) is there:
given no build option, that table is served as it was built; given build
options, it is served when it was built with them, rebuilt otherwise.
`--root DIR` serves DIR/current, the generation `kv publish` switched to;
SIGHUP (systemctl reload) starts fresh workers on whatever `current` then
points to.

Settings (kv/settings.py) come from the flag, else the `KV_*` variable, else
the gunicorn configuration file, else kv's default. The listening socket is
bound before gunicorn starts, in one attempt: a busy port is one line and
exit 1, and "serving ... on ..." is printed only once the socket listens.

This process becomes the gunicorn master (pid file, signals, as usual); each
worker maps the table itself, read-only.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import settings
from .errors import DataFormatError, KVError, ServeError, SettingError, TableCorrupt
from .gunicorn_app import GunicornServer, KVArbiter, _raise_open_file_limit, listen, open_table_fd, start_metrics_server  # noqa: F401 (importable from here, as before)
from .options import BuildOptions
from .publish import is_table
from .settings import Resolved

default_config = settings.checkout_gunicorn_config  # the --config default (kept importable from here)
PACKAGED_CONFIG = "kv/gunicorn_conf.py"  # what runs when there is no config file


def _say(message: str) -> None:
    print(f"kv serve: {message}", file=sys.stderr)


# -- which table ------------------------------------------------------------------------------


def _in_words(options: BuildOptions) -> str:
    flags = options.flags()
    return " ".join(flags) if flags else "default options"


def table_for_data(data: Path, options: BuildOptions | None, log: Callable[[str], None] = _say, table_dir: str | None = None) -> Path:
    """The table for a data file: the one next to it (or in `table_dir`) when it
    was built from this same file and (when `options` is given: some build flag
    was) with these options; else a fresh build, with `options` or the defaults."""
    from .build import build_table, default_table_path
    from .table import open_table

    data = Path(data)
    if options is not None:
        options = options.for_data(data)  # --format auto: from the file name
    table = default_table_path(data)
    if table_dir:
        os.makedirs(table_dir, exist_ok=True)
        table = Path(table_dir) / table.name
    st = data.stat()
    if table.exists():
        try:
            with open_table(table) as t:
                src, recorded = t.meta.get("source", {}), t.meta.get("options", {})
            built = BuildOptions.from_recorded(recorded)
            if (src.get("name"), src.get("size"), src.get("mtime_ns")) != (data.name, st.st_size, st.st_mtime_ns):
                log(f"rebuilding {table}: the data file changed since it was built")
            elif options is None:
                log(f"reusing {table}, built from this {data.name} with {_in_words(built)} (give build options to build it otherwise)")
                return table
            elif options == built:
                log(f"reusing {table} (built from this {data.name}, same options)")
                return table
            else:
                log(
                    f"rebuilding {table}: it was built with other options: {', '.join(options.differences(recorded))}. "
                    f"To serve it as built, give no build option; to rebuild keeping its options, "
                    f"give them too: {_in_words(BuildOptions.from_recorded({**recorded, **_changed(options, data)}))}"
                )
        except (TableCorrupt, OSError, ValueError) as e:  # ValueError: options recorded that no kv accepts
            log(f"rebuilding {table}: {e}")
    report = build_table(data, table, options or BuildOptions())
    print(report.summary(), file=sys.stderr)
    return table


def _changed(options: BuildOptions, data: Path) -> dict:
    """The options that are not `data`'s defaults (what the user asked for;
    `options` resolved for `data`, as the defaults are here)."""
    default = BuildOptions().for_data(data).recorded()
    return {k: v for k, v in options.recorded().items() if default.get(k) != v}


def resolve_table(path: str | None, root: str | None, options: BuildOptions | None, table_dir: str | None = None) -> Path:
    if root:
        if path:
            raise ValueError("give PATH or --root, not both")
        current = Path(root) / "current"
        if not current.exists():
            raise FileNotFoundError(f"{current} does not exist; publish a table first: kv publish DATA --root {root}")
        return current
    if not path:
        raise ValueError("nothing to serve: give a data file, a table, or --root DIR")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_dir():
        raise ValueError(f"{p} is a directory; to serve a publish root use --root {p}")
    if is_table(p):
        if options is not None:
            _say(f"build options ignored: {p} is a table, served as it was built")
        return p
    return table_for_data(p, options, table_dir=table_dir)


def describe_table(path: str | None, root: str | None, options: BuildOptions | None, table_dir: str | None = None) -> tuple[Path, str]:
    """The table to serve and a description; ServeError when it cannot be served."""
    from .table import open_table

    try:
        table = resolve_table(path, root, options, table_dir)
        with open_table(table) as t:  # refuse to start on a table no worker could serve
            return table, f"{t.path} ({len(t):,} records, generation {t.generation})"
    except (FileNotFoundError, PermissionError, IsADirectoryError, TableCorrupt, DataFormatError, ValueError) as e:
        raise ServeError(f"cannot serve: {e}") from None
    except OSError as e:
        raise ServeError(f"cannot serve {e.filename or ''}: {e.strerror or e}") from None


# -- which settings ---------------------------------------------------------------------------


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


def server_settings(given: dict[str, Any]) -> tuple[dict[str, Resolved], dict]:
    """Each of kv serve's settings (flag `given`, else KV_*, else the config
    file, else the default) and the config file's names. A bad KV_* value is a
    SettingError naming it; an error in the config file is a ServeError."""
    for s in settings.SERVER_SETTINGS:  # a bad KV_* value is named before the file (which reads them too) runs
        s.from_env()
    config = settings.resolve(settings.CONFIG, given.get("config"))
    try:
        file = gunicorn_settings(config.value)
    except Exception as e:  # noqa: BLE001 - the user's file: any error in it is theirs to see, in one line
        raise ServeError(f"--config {config.value}: {type(e).__name__}: {e}") from None
    name = config.value or PACKAGED_CONFIG
    out = {"config": config}
    try:
        for s in settings.SERVER_SETTINGS:
            if s is not settings.CONFIG:
                out[s.name] = settings.resolve(s, given.get(s.name), file, name)
    except SettingError as e:  # flags and KV_* were checked already: a value the file sets
        raise ServeError(str(e)) from None
    return out, file


def check_keepalive(keepalive: Resolved, graceful_timeout: float, config_name: str) -> None:
    """A stopping or reloading worker keeps idle connections open up to
    `keepalive` seconds to drain them without resets (kv/worker.py); gunicorn
    kills it at `graceful_timeout`. keepalive must stay below it, or the drain
    is cut short: refused, not silently adjusted."""
    if keepalive.value >= graceful_timeout:
        raise ServeError(
            f"{keepalive.describe(settings.KEEPALIVE)} is not below graceful_timeout ({graceful_timeout:g} s, "
            f"{config_name}): a stopping worker drains idle connections for up to keepalive seconds and is killed "
            f"at graceful_timeout; use a smaller --keepalive, or raise graceful_timeout in a --config file"
        )


def default_pid_file(root: str | None) -> str | None:
    env = os.environ
    if env.get("RUNTIME_DIRECTORY"):
        return os.path.join(env["RUNTIME_DIRECTORY"].split(":")[0], "kv.pid")
    if root and os.access(root, os.W_OK):
        return os.path.join(root, "kv.pid")
    return None


# -- serve ------------------------------------------------------------------------------------


def prepare_root(root: str, writable: bool, keys: str | None) -> bool:
    """Recover ROOT before any worker starts (kv/writes.py): its head page
    made true, a torn tail of its change log dropped; a writable root with no
    generation starts empty. True when workers can follow its head page (so
    publishes and writes reach them live); False for a root this user cannot
    write that has no head page yet (served as a plain table, as before)."""
    from .head import head_path
    from .writes import recover

    try:
        recover(root, create_kind=(keys or "uuid") if writable else None, log_=_say)
    except PermissionError:
        if writable:
            raise ServeError(f"--writable: {root} is not writable by this user (uid {os.getuid()})") from None
        return head_path(root).exists()
    except OSError as e:
        if writable or e.errno != errno.EROFS:
            raise ServeError(f"cannot serve {root}: {e.strerror or e}") from None
        return head_path(root).exists()
    except KVError as e:
        raise ServeError(f"cannot serve: {e}") from None
    return True


def write_token(writable: bool, token_file: str | None) -> None:
    """--writable needs a token (KV_WRITE_TOKEN or --write-token-file); check it here, in one line."""
    from .http.writes import WriteTokenError, read_write_token

    if not writable:
        return
    try:
        token = read_write_token(token_file)
    except WriteTokenError as e:
        raise ServeError(str(e)) from None
    if token is None:
        raise ServeError(f"--writable needs a write token: set {settings.WRITE_TOKEN_ENV} or give --write-token-file FILE")


def serve(
    path: str | None, root: str | None, options: BuildOptions | None, given: dict[str, Any], writable: bool = False, keys: str | None = None
) -> None:
    """Serve until stopped. ServeError (one line) when it cannot start;
    SettingError for a bad KV_* value."""
    resolved, file = server_settings(given)
    config_name = resolved["config"].value or PACKAGED_CONFIG
    graceful = file.get("graceful_timeout", 30)  # 30: gunicorn's own default
    check_keepalive(resolved["keepalive"], graceful, config_name)
    if writable and not root:
        raise ServeError("--writable needs --root DIR: writes go to a publish root's change log")
    write_token(writable, resolved["write_token_file"].value)
    live = prepare_root(root, writable, keys) if root else False
    table, desc = describe_table(path, root, options, resolved["table_dir"].value)
    tls = tls_settings(resolved)
    check_token_file(resolved["read_token_file"].value)

    env = os.environ
    env["KV_TABLE"] = str(Path(table).absolute())
    env["KV_TABLE_FD"] = str(open_table_fd(env["KV_TABLE"]))
    for name in ("read_token_file", "metrics_bind"):  # the workers read these (kv/http/auth.py)
        setting, value = settings.BY_NAME[name], resolved[name].value
        if value:
            env[setting.env] = os.path.abspath(value) if name == "read_token_file" else value
        else:
            env.pop(setting.env, None)
    for name in ("KV_ROOT", "KV_WRITABLE"):
        env.pop(name, None)
    if live and root:
        env["KV_ROOT"] = str(Path(root).absolute())  # the workers follow ROOT/head
        desc += " (writable)" if writable else " (following publishes live)"
    if writable:
        env["KV_WRITABLE"] = "1"
        env[settings.COMPACT_CHANGES.env] = str(resolved["compact_changes"].value)
        env[settings.COMPACT_BYTES.env] = str(resolved["compact_bytes"].value)
        if resolved["write_token_file"].value:
            env[settings.WRITE_TOKEN_FILE.env] = str(Path(resolved["write_token_file"].value).absolute())
    env[settings.MAX_BATCH.env] = str(resolved["max_batch"].value)  # the workers read these two
    env[settings.LOG_LEVEL.env] = resolved["log_level"].value
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        base = env.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
        d = tempfile.mkdtemp(prefix="kv-metrics-", dir=base)
        env["PROMETHEUS_MULTIPROC_DIR"] = d
        env["KV_OWN_METRICS_DIR"] = d

    overrides = {
        "bind": resolved["bind"].value if isinstance(resolved["bind"].value, list) else [resolved["bind"].value],
        "workers": resolved["workers"].value,
        "keepalive": resolved["keepalive"].value,
        "loglevel": resolved["log_level"].value,
    }
    overrides.update(tls)
    pid_file = resolved["pid_file"].value or default_pid_file(root)
    if pid_file:
        overrides["pidfile"] = pid_file
    _raise_open_file_limit()
    extras = (" (mutual TLS)" if "ca_certs" in tls else "") + (", read tokens required" if env.get(settings.READ_TOKEN_FILE.env) else "")
    server = GunicornServer(
        file,
        overrides,
        announce=lambda where, workers: _say(f"serving {desc} on {where} with {workers} worker(s){extras}"),
        metrics_bind=resolved["metrics_bind"].value,
    )
    try:
        server.run()
    except ServeError:
        if env.get("KV_OWN_METRICS_DIR"):  # gunicorn's on_exit hook, which removes it, never ran
            shutil.rmtree(env["KV_OWN_METRICS_DIR"], ignore_errors=True)
        raise


def tls_settings(resolved: dict[str, Resolved]) -> dict:
    """gunicorn's TLS settings from --certfile, --keyfile and --ca-certs, each
    file checked now (a one-line ServeError, not a worker that fails to boot)."""
    import ssl

    cert, key, ca = (resolved[n].value for n in ("certfile", "keyfile", "ca_certs"))
    if not cert and not key:
        if ca:
            raise ServeError("--ca-certs (mutual TLS) needs --certfile and --keyfile: the server's own certificate")
        return {}
    if not (cert and key):
        raise ServeError("TLS needs both --certfile and --keyfile (KV_CERTFILE, KV_KEYFILE)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
    except FileNotFoundError as e:
        raise ServeError(f"cannot serve TLS: {e.filename}: no such file") from None
    except (OSError, ssl.SSLError) as e:
        raise ServeError(
            f"cannot serve TLS with certificate {cert}, key {key}{f', CA {ca}' if ca else ''}: {getattr(e, 'reason', None) or e}"
        ) from None
    out = {"certfile": os.path.abspath(cert), "keyfile": os.path.abspath(key)}
    if ca:
        out.update(ca_certs=os.path.abspath(ca), cert_reqs=ssl.CERT_REQUIRED)
    return out


def check_token_file(path: str | None) -> None:
    """The read token file is usable (a ServeError otherwise); a word when others may read it."""
    if not path:
        return
    from .http.auth import TokenFileError, permission_warning, read_token_file

    try:
        n = len(read_token_file(path))
    except TokenFileError as e:
        raise ServeError(str(e)) from None
    warning = permission_warning(path)
    if warning:
        _say(f"warning: {warning}")
    _say(f"read tokens: {n} from {path}")
