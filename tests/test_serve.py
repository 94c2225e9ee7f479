"""`kv serve DATA`: builds the table next to the data file, reuses it when its
recorded source (name, size, mtime) and build options match, rebuilds when
any of them differs; runs gunicorn with the configuration file it is given."""

from __future__ import annotations

import os
import textwrap

import httpx
import pytest

from conftest import write_records
from kv.build import build_table
from kv.options import BuildOptions
from kv.serve import default_config, table_for_data
from kv.table import open_table
from serverutil import running_server

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
    conf.write_text(textwrap.dedent(f"""
        from kv.gunicorn_conf import *  # noqa

        def when_ready(server):
            open({str(marker)!r}, "w").write("ready")
    """))
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
