"""`kv serve DATA`: builds the table next to the data file, reuses it when its
recorded source (name, size, mtime) and build options match, rebuilds when
any of them differs; runs gunicorn with the configuration file it is given."""

from __future__ import annotations

import os
import textwrap

import httpx
import pytest
from conftest import write_records
from serverutil import running_server

from kv.build import build_table
from kv.options import BuildOptions
from kv.serve import default_config, table_for_data
from kv.table import open_table

KEY = "3479d894-3271-4935-88cf-a06f3cbb80a5"
OTHER = "f8a24bb8-eff8-41dc-929b-10b4c3e49e05"
DEFAULTS = BuildOptions()  # build options given, as the defaults


@pytest.fixture
def data(tmp_path):
    return write_records(tmp_path / "d.data", [(KEY, b"one"), (OTHER, b"1234")])


def built_ino(path) -> int:
    return os.stat(path).st_ino  # a rebuild renames a new file into place: a new inode


def test_first_serve_builds_the_table_next_to_the_data(data, capsys):
    table = table_for_data(data, DEFAULTS)
    assert table == data.with_suffix(".kvt")
    assert open_table(table).get(OTHER) == b"1234"


def test_restart_reuses_the_table(data, capsys):
    table = table_for_data(data, DEFAULTS)
    ino = built_ino(table)
    capsys.readouterr()
    assert table_for_data(data, DEFAULTS) == table
    assert built_ino(table) == ino
    assert "reusing" in capsys.readouterr().err


def test_changed_data_file_is_rebuilt(data, capsys):
    table = table_for_data(data, DEFAULTS)
    ino = built_ino(table)
    with open(data, "ab") as f:
        f.write(b"0cdfafb5-edb4-48a6-a7ec-5b1a75831f91 new\n")
    table_for_data(data, DEFAULTS)
    assert built_ino(table) != ino
    assert open_table(table).get("0cdfafb5-edb4-48a6-a7ec-5b1a75831f91") == b"new"
    assert "data file changed" in capsys.readouterr().err


def test_touched_data_file_is_rebuilt(data):
    table = table_for_data(data, DEFAULTS)
    ino = built_ino(table)
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, new mtime
    table_for_data(data, DEFAULTS)
    assert built_ino(table) != ino


def test_other_serve_options_rebuild(data, capsys):
    table = table_for_data(data, DEFAULTS)
    ino = built_ino(table)
    table_for_data(data, BuildOptions(on_duplicate="last"))
    assert built_ino(table) != ino
    assert open_table(table).meta["options"]["on_duplicate"] == "last"
    assert "other options" in capsys.readouterr().err


@pytest.mark.parametrize("option", [{"keep_cr": True}, {"load_factor": 0.5}])
def test_table_built_by_hand_with_options_serve_does_not_give_is_rebuilt(data, option):
    table = data.with_suffix(".kvt")
    build_table(data, table, **option)
    ino = built_ino(table)
    table_for_data(data, DEFAULTS)
    assert built_ino(table) != ino
    opts = open_table(table).meta["options"]
    assert all(opts[k] != v for k, v in option.items())


def test_corrupt_table_next_to_the_data_is_rebuilt(data, capsys):
    table = table_for_data(data, DEFAULTS)
    table.chmod(0o644)
    with open(table, "r+b") as f:
        f.write(b"garbage!")
    table_for_data(data, DEFAULTS)
    assert open_table(table).get(KEY) == b"one"


def test_checkout_defaults_to_deploy_gunicorn_conf():
    path = default_config()
    assert path is not None and path.endswith(os.path.join("deploy", "gunicorn.conf.py"))


def test_serve_data_file_end_to_end_and_restart_reuses(data):
    with running_server(data, workers=1) as (url, proc):
        assert httpx.get(f"{url}/v1/keys/{OTHER}").content == b"1234"
    ino = built_ino(data.with_suffix(".kvt"))
    with running_server(data, workers=1) as (url, proc):
        assert httpx.get(f"{url}/v1/keys/{KEY}").content == b"one"
    assert built_ino(data.with_suffix(".kvt")) == ino


def test_serve_runs_with_the_given_gunicorn_config(data, tmp_path):
    marker = tmp_path / "ready"
    conf = tmp_path / "my.conf.py"
    conf.write_text(
        textwrap.dedent(f"""
        from kv.gunicorn_conf import *  # noqa

        def when_ready(server):
            open({str(marker)!r}, "w").write("ready")
    """)
    )
    with running_server(data, "--config", conf, workers=1) as (url, proc):
        assert httpx.get(f"{url}/v1/keys/{OTHER}").content == b"1234"
        assert marker.read_text() == "ready"


def test_serve_refuses_a_missing_config_file(data, tmp_path):
    import subprocess

    from serverutil import KV

    r = subprocess.run([KV, "serve", str(data), "--config", str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no such file" in r.stderr


def test_serve_names_an_error_in_the_config_file_in_one_line(data, tmp_path):
    import subprocess

    from serverutil import KV

    conf = tmp_path / "broken.conf.py"
    conf.write_text("workers = (\n")
    r = subprocess.run([KV, "serve", str(data), "--config", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(f"kv serve: --config {conf}: SyntaxError")
    assert "Traceback" not in r.stderr


# -- a table built with options, then served (the README's sequence) ---------------------------


@pytest.fixture
def messy(tmp_path):
    """A data file with a malformed line: it builds only with --skip-invalid."""
    path = write_records(tmp_path / "m.data", [(KEY, b"one"), (OTHER, b"1234")])
    with open(path, "ab") as f:
        f.write(b"not a record\n")
    return path


def test_serve_without_build_options_serves_the_table_as_built_and_says_how(messy, capsys):
    from kv.cli import main

    assert main(["build", str(messy), "--skip-invalid"]) == 0
    table = messy.with_suffix(".kvt")
    ino = built_ino(table)
    capsys.readouterr()
    assert table_for_data(messy, None) == table
    assert built_ino(table) == ino
    err = capsys.readouterr().err
    assert "reusing" in err and "with --skip-invalid" in err


def test_serve_without_build_options_on_a_default_table_says_default_options(data, capsys):
    table_for_data(data, None)
    capsys.readouterr()
    table_for_data(data, None)
    assert "with default options" in capsys.readouterr().err


def test_serve_with_other_build_options_names_the_option_in_words_and_the_fix(messy, capsys):
    build_table(messy, messy.with_suffix(".kvt"), skip_invalid=True)
    with pytest.raises(Exception, match="not a record"):
        table_for_data(messy, BuildOptions(on_duplicate="last"))  # the rebuild needs --skip-invalid too
    err = capsys.readouterr().err
    assert "--skip-invalid (table: on, asked: off)" in err and "--on-duplicate (table: error, asked: last)" in err
    assert "give no build option" in err and "give them too: --skip-invalid --on-duplicate last" in err
    assert "{" not in err  # no Python dict


def test_kv_serve_after_kv_build_skip_invalid_serves(messy):
    import subprocess

    from serverutil import KV

    r = subprocess.run([KV, "build", str(messy), "--skip-invalid"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with running_server(messy, workers=1) as (url, proc):
        assert httpx.get(f"{url}/v1/keys/{KEY}").content == b"one"


# -- settings from the config file, the environment and the flags, read back from the server -----


def _start(args, env=None):
    import subprocess

    from serverutil import KV

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    full_env.update(env or {})
    return subprocess.Popen(
        [KV, "serve", *map(str, args)], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _workers_settle_at(master: int, n: int, timeout: float = 20) -> bool:
    import time

    from serverutil import worker_pids

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(worker_pids(master)) == n:
            time.sleep(0.3)
            return len(worker_pids(master)) == n
        time.sleep(0.05)
    return False


def test_config_file_bind_and_workers_are_used_and_env_and_flags_override_them(data, tmp_path):
    from conftest import free_port
    from serverutil import stop, wait_ready

    file_port, env_port = free_port(), free_port()
    conf = tmp_path / "my.conf.py"
    conf.write_text(f"from kv.gunicorn_conf import *  # noqa\nbind = '127.0.0.1:{file_port}'\nworkers = 2\nloglevel = 'warning'\n")
    proc = _start([data, "--config", conf])  # the file's bind and workers
    try:
        wait_ready(f"http://127.0.0.1:{file_port}", proc)
        assert _workers_settle_at(proc.pid, 2)
    finally:
        stop(proc)
    proc = _start([data, "--config", conf, "--workers", "1"], env={"KV_BIND": f"127.0.0.1:{env_port}", "KV_WORKERS": "3"})
    try:
        wait_ready(f"http://127.0.0.1:{env_port}", proc)  # KV_BIND over the file
        assert _workers_settle_at(proc.pid, 1)  # --workers over KV_WORKERS over the file
    finally:
        stop(proc)


# -- starting and stopping -------------------------------------------------------------------------


def test_serving_is_announced_only_once_the_port_accepts_connections(data):
    import re
    import socket

    from conftest import free_port
    from serverutil import stop

    port = free_port()
    proc = _start([data, "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"])
    try:
        for line in proc.stdout:
            if line.startswith(b"kv serve: serving"):
                break
        url = re.search(rb"on (http://\S+) with 1 worker", line).group(1).decode()
        assert url == f"http://127.0.0.1:{port}"
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # accepted: bound and listening
    finally:
        stop(proc)


def test_a_busy_port_is_one_line_and_exit_1_at_once(data):
    import socket
    import subprocess
    import time

    from serverutil import KV

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run(
            [KV, "serve", str(data), "--bind", f"127.0.0.1:{port}", "--workers", "1"], capture_output=True, text=True, timeout=30
        )
    assert r.returncode == 1 and time.monotonic() - t0 < 4
    lines = [line for line in r.stderr.splitlines() if "building" not in line and line.startswith("kv serve:")]
    assert lines[-1] == (
        f"kv serve: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server is listening there; choose another with --bind or KV_BIND)"
    )
    assert "Retrying" not in r.stderr and "Connection in use" not in r.stderr and "[ERROR]" not in r.stderr


def test_a_worker_stop_logs_no_socket_close_error(data):
    """uvloop closes a worker's listening socket; gunicorn's wrapper used to
    close it again (EBADF, "Error while closing socket [Errno 9] Bad file
    descriptor" at every stop)."""
    from serverutil import stop

    with running_server(data, workers=2, log_level="info") as (url, proc):
        assert httpx.get(f"{url}/v1/keys/{KEY}").content == b"one"
    stop(proc)
    out = proc.stdout.read().decode(errors="replace")
    assert "Shutting down" in out  # the log was read at info level
    assert "Bad file descriptor" not in out and "Error while closing socket" not in out, out


def test_kv_worker_overrides_the_serve_coroutine_of_uvicorn_worker():
    """Contract with uvicorn-worker: KVWorker._serve wraps UvicornWorker._serve,
    which passes self.sockets to uvicorn."""
    import inspect

    from uvicorn_worker import UvicornWorker

    from kv.worker import KVWorker

    assert "self.sockets" in inspect.getsource(UvicornWorker._serve)
    assert KVWorker._serve is not UvicornWorker._serve


def test_build_options_given_with_a_table_are_ignored_with_a_word(data, capsys):
    from kv.serve import resolve_table

    table = table_for_data(data, None)
    capsys.readouterr()
    assert resolve_table(str(table), None, BuildOptions(skip_invalid=True)) == table
    assert "build options ignored" in capsys.readouterr().err
