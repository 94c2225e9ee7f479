"""Every setting of kv, declared once: name, command-line flag, `KV_*`
environment variable, parser, default and help (like Datasette's SETTINGS).

`kv serve`, `kv get`/`kv stats`, `kv reload`, the client and the gunicorn
configuration (kv/gunicorn_conf.py) all read their values from here; nothing
else names a `KV_*` variable's default. A value is taken from, in order:

    1. the command-line flag, when given
    2. the `KV_*` environment variable, when set (and not empty)
    3. for `kv serve`, the gunicorn configuration file (`--config`), when it sets it
    4. the default below

A value that does not parse is a SettingError whose message names where it
came from (`KV_TIMEOUT must be ...`, `--timeout: must be ...`), never another
source. `python -m kv.settings` prints the table of settings.

This module imports nothing outside the standard library: the light CLI
commands (`kv get`, `kv --help`) import it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SettingError
from .parsers import LOG_LEVELS, address, bearer_token, file_path, log_level, positive_int, positive_seconds, server_url

# -- computed defaults --------------------------------------------------------------------------


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


def checkout_gunicorn_config() -> str | None:
    """deploy/gunicorn.conf.py beside the package in a checkout (an editable
    install), so editing it changes what `kv serve` runs; None (the packaged
    kv/gunicorn_conf.py) in an installed kv."""
    p = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
    return str(p) if p.is_file() else None


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any  # the value, or a function of no arguments that computes it
    help: str
    shown_default: str = ""  # how --help shows the default, when not str(default)
    metavar: str | None = None
    gunicorn: str | None = None  # the gunicorn setting it is; a --config file may set it

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def parse_from(self, text: str, source: str) -> Any:
        """`text` parsed; a SettingError naming `source` (a flag, env var or file) otherwise."""
        try:
            return self.parse(text)
        except ValueError as e:
            raise SettingError(f"{source} {e}") from None

    def from_env(self, environ: Mapping[str, str] | None = None) -> Any:
        """The environment's value, or None when the variable is unset or empty."""
        text = (os.environ if environ is None else environ).get(self.env, "")
        return None if text == "" else self.parse_from(text, self.env)

    def value(self, given: Any = None, environ: Mapping[str, str] | None = None) -> Any:
        """`given` (a flag's value; None: not given), else the environment's, else the default."""
        if given is not None:
            return given
        from_env = self.from_env(environ)
        return self.default_value() if from_env is None else from_env

    def add_to(self, parser: argparse.ArgumentParser, help: str | None = None, shown_default: str | None = None, **kw: Any) -> None:
        """Declare the flag. Its default is None so that "not given" is visible:
        resolve with `value()` (or `resolve()`) after parsing. `shown_default`
        replaces the setting's own description of its default, for a command
        whose default differs (kv reload looks for the file `kv serve` writes)."""
        shown = shown_default or self.shown_default or ("none" if self.default is None else str(self.default))
        parser.add_argument(
            self.flag,
            dest=self.name,
            type=_argparse_type(self.parse),
            default=None,
            metavar=self.metavar,
            help=f"{help or self.help} (default: {shown}; env {self.env})",
            **kw,
        )


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


BIND = Setting("bind", "--bind", "KV_BIND", address, "127.0.0.1:8000", "address to listen on", metavar="HOST:PORT", gunicorn="bind")
WORKERS = Setting(
    "workers",
    "--workers",
    "KV_WORKERS",
    positive_int,
    available_cpus,
    "worker processes",
    shown_default="the CPUs this process may use, affinity and cgroup quota counted",
    metavar="N",
    gunicorn="workers",
)
KEEPALIVE = Setting(
    "keepalive",
    "--keepalive",
    "KV_KEEPALIVE",
    positive_int,
    5,
    "close a connection idle this long, or whose request head is not complete this long after its "
    "first byte; must be below gunicorn's graceful_timeout (kv serve refuses it otherwise)",
    metavar="SECONDS",
    gunicorn="keepalive",
)
MAX_BATCH = Setting("max_batch", "--max-batch", "KV_MAX_BATCH", positive_int, 1000, "most keys in one batch request", metavar="N")
PID_FILE = Setting(
    "pid_file",
    "--pid-file",
    "KV_PID_FILE",
    file_path,
    None,
    "write the master pid here",
    shown_default="$RUNTIME_DIRECTORY/kv.pid under systemd, else ROOT/kv.pid with --root",
    metavar="FILE",
    gunicorn="pidfile",
)
LOG_LEVEL = Setting(
    "log_level",
    "--log-level",
    "KV_LOG_LEVEL",
    log_level,
    "info",
    f"gunicorn's log level: {', '.join(LOG_LEVELS)}",
    metavar="LEVEL",
    gunicorn="loglevel",
)
CONFIG = Setting(
    "config",
    "--config",
    "KV_GUNICORN_CONFIG",
    file_path,
    checkout_gunicorn_config,
    "gunicorn configuration file; the flags and KV_* variables above override what it sets",
    shown_default="deploy/gunicorn.conf.py of this checkout when present, else the packaged kv/gunicorn_conf.py",
    metavar="FILE",
)
TABLE_DIR = Setting(
    "table_dir",
    "--table-dir",
    "KV_TABLE_DIR",
    file_path,
    None,
    "when PATH is a data file: build its table in DIR (created when missing) instead of beside the "
    "data, e.g. when the data is on a read-only volume",
    shown_default="beside the data file",
    metavar="DIR",
)
URL = Setting("url", "--url", "KV_URL", server_url, f"http://{BIND.default}", "server URL", metavar="URL")  # kv serve's default address
TIMEOUT = Setting(
    "timeout",
    "--timeout",
    "KV_TIMEOUT",
    positive_seconds,
    5.0,
    "seconds to wait for the server to accept and to answer; a server silent that long counts as unreachable",
    shown_default="5",
    metavar="SECONDS",
)

# TLS and access (docs/SECURITY.md).
CERTFILE = Setting(
    "certfile",
    "--certfile",
    "KV_CERTFILE",
    file_path,
    None,
    "serve HTTPS with this PEM certificate (chain); needs --keyfile. Plain HTTP to the port is refused",
    metavar="FILE",
    gunicorn="certfile",
)
KEYFILE = Setting(
    "keyfile", "--keyfile", "KV_KEYFILE", file_path, None, "the private key of --certfile (PEM)", metavar="FILE", gunicorn="keyfile"
)
CA_CERTS = Setting(
    "ca_certs",
    "--ca-certs",
    "KV_CA_CERTS",
    file_path,
    None,
    "mutual TLS: require a client certificate signed by a CA in this PEM file",
    metavar="FILE",
    gunicorn="ca_certs",
)
READ_TOKEN_FILE = Setting(
    "read_token_file",
    "--read-token-file",
    "KV_READ_TOKEN_FILE",
    file_path,
    None,
    "require `Authorization: Bearer TOKEN` on every route but /healthz and /readyz; one token "
    "a line, # comments; re-read on SIGHUP (kv reload)",
    metavar="FILE",
)
METRICS_BIND = Setting(
    "metrics_bind",
    "--metrics-bind",
    "KV_METRICS_BIND",
    address,
    None,
    "serve /metrics only on this separate HOST:PORT (from the master), not on --bind",
    metavar="HOST:PORT",
)
TOKEN = Setting(
    "token",
    "--token",
    "KV_TOKEN",
    bearer_token,
    None,
    "bearer token to send: a read token (kv serve --read-token-file); for kv set and kv delete, the write token",
    metavar="TOKEN",
)
CACERT = Setting(
    "cacert",
    "--cacert",
    "KV_CACERT",
    file_path,
    None,
    "verify an https:// server against this CA (PEM) instead of the system's",
    metavar="FILE",
)
CERT = Setting(
    "cert",
    "--cert",
    "KV_CERT",
    file_path,
    None,
    "client certificate (PEM) for a server that requires one (kv serve --ca-certs)",
    metavar="FILE",
)
KEY = Setting("key", "--key", "KV_KEY", file_path, None, "the private key of --cert, when not in the same file", metavar="FILE")

# Writes (docs/WRITES.md).
WRITE_TOKEN_ENV = "KV_WRITE_TOKEN"  # the write token itself (a secret: no flag, never in a process's arguments)
WRITE_TOKEN_FILE = Setting(
    "write_token_file",
    "--write-token-file",
    "KV_WRITE_TOKEN_FILE",
    file_path,
    None,
    "with --writable: the file holding the write token (its first line that is not blank "
    "or a # comment); KV_WRITE_TOKEN, when set, is the token itself",
    metavar="FILE",
)
COMPACT_CHANGES = Setting(
    "compact_changes",
    "--compact-changes",
    "KV_COMPACT_CHANGES",
    positive_int,
    100_000,
    "with --writable: fold the change log into a new base table once it holds this many changes (set or deleted keys)",
    metavar="N",
)
COMPACT_BYTES = Setting(
    "compact_bytes",
    "--compact-bytes",
    "KV_COMPACT_BYTES",
    positive_int,
    64 << 20,
    "with --writable: ... or this many bytes",
    shown_default="67108864 (64 MiB)",
    metavar="BYTES",
)

SERVER_SETTINGS: tuple[Setting, ...] = (  # kv serve's
    BIND, WORKERS, KEEPALIVE, MAX_BATCH, PID_FILE, LOG_LEVEL, CONFIG, TABLE_DIR, CERTFILE, KEYFILE, CA_CERTS,
    READ_TOKEN_FILE, METRICS_BIND, WRITE_TOKEN_FILE, COMPACT_CHANGES, COMPACT_BYTES,
)  # fmt: skip
CLIENT_SETTINGS: tuple[Setting, ...] = (URL, TIMEOUT, TOKEN, CACERT, CERT, KEY)  # kv get, kv stats, kv.Client
SETTINGS: tuple[Setting, ...] = SERVER_SETTINGS + CLIENT_SETTINGS  # every setting, once
BY_NAME = {s.name: s for s in SETTINGS}


# `kv deploy nginx` (flags only, no KV_* variable): the front's per-client rate
# limit (nginx limit_req, keyed by client address). 1000 requests/s is far
# above what one well-behaved client needs and far below what two workers of
# one shard serve (tens of thousands): one client cannot take a shard; a
# burst of 2000 lets a client fire a large batch of single gets at once.
NGINX_RATE = 1000
NGINX_BURST = 2000


# -- kv serve: flag, environment, config file, default -------------------------------------------


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "--workers", "KV_WORKERS", the config file's path, or "default"

    def describe(self, setting: Setting) -> str:
        """E.g. "--keepalive 20", "KV_KEEPALIVE=20", "keepalive = 20 in FILE", "the default --keepalive 5"."""
        if self.source == setting.flag:
            return f"{setting.flag} {self.value}"
        if self.source == setting.env:
            return f"{setting.env}={self.value}"
        if self.source == "default":
            return f"the default {setting.flag} {self.value}"
        return f"{setting.gunicorn} = {self.value!r} in {self.source}"


def resolve(
    setting: Setting, given: Any, config: Mapping[str, Any] | None = None, config_name: str = "", environ: Mapping[str, str] | None = None
) -> Resolved:
    """The value of `setting` and where it came from: the flag's `given`
    value, else the environment, else the gunicorn config file's setting
    (`config`, the names the file defines), else the default."""
    if given is not None:
        return Resolved(given, setting.flag)
    from_env = setting.from_env(environ)
    if from_env is not None:
        return Resolved(from_env, setting.env)
    default = setting.default_value()
    if config is not None and setting.gunicorn and config.get(setting.gunicorn) is not None:
        value = config[setting.gunicorn]
        source = f"{config_name}: {setting.gunicorn}"
        if setting.gunicorn == "bind":
            value = [setting.parse_from(str(v), source) for v in ([value] if isinstance(value, str) else value)]
            default = [default]
        else:
            value = setting.parse_from(str(value), source)
        # kv/gunicorn_conf.py sets every kv setting to its default (the
        # environment was looked at above): a file that only imports it sets nothing.
        if value != default:
            return Resolved(value, config_name)
    return Resolved(default, "default")


def table() -> str:
    """The settings as a Markdown table (for the documentation)."""
    rows = ["| setting | flag | environment | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        shown = s.shown_default or ("none" if s.default is None else str(s.default))
        rows.append(f"| {s.name} | `{s.flag}` | `{s.env}` | {shown} | {s.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
