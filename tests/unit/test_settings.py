"""kv/settings.py: every setting declared once, and kv serve's precedence:
flag, then KV_* environment, then the gunicorn config file, then the default."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT
from serverutil import KV

from kv import settings
from kv.errors import KVError, SettingError
from kv.serve import ServeError, check_keepalive, server_settings

NO_FLAGS = {s.name: None for s in settings.SERVER_SETTINGS}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for s in settings.SETTINGS:
        monkeypatch.delenv(s.env, raising=False)


def config_file(tmp_path, body: str) -> str:
    path = tmp_path / "my.conf.py"
    path.write_text("from kv.gunicorn_conf import *  # noqa\n" + textwrap.dedent(body))
    return str(path)


# -- the registry ---------------------------------------------------------------------------------


def test_every_setting_has_a_flag_an_env_var_a_default_and_help():
    assert len({s.name for s in settings.SETTINGS}) == len({s.env for s in settings.SETTINGS}) == len(settings.SETTINGS)
    for s in settings.SETTINGS:
        assert s.flag.startswith("--") and s.env.startswith("KV_") and s.help
        assert s.default is None or s.default_value() is not None


def test_no_other_module_writes_a_kv_default():
    """The defaults and the KV_* names of the registry appear nowhere else in
    the code that reads them (kv/app.py, the HTTP layer's, excepted)."""
    owned = ["cli.py", "client.py", "serve.py", "publish.py", "deploy.py", "gunicorn_conf.py", "worker.py", "writes.py", "commands"]
    files = [p for name in owned for p in ([ROOT / "kv" / name] if name.endswith(".py") else (ROOT / "kv" / name).glob("*.py"))]
    files.append(ROOT / "deploy" / "gunicorn.conf.py")
    for path in files:
        text = path.read_text()
        for s in settings.SETTINGS:
            assert f'"{s.env}"' not in text, f"{path} names {s.env}: read it through kv.settings"
        for literal in ('"127.0.0.1:8000"', '"http://127.0.0.1:8000"', "1000)", "keepalive = 5", "100_000", "64 << 20"):
            assert literal not in text, f"{path} repeats the default {literal}"


def test_the_image_healthcheck_falls_back_to_the_registry_bind_default():
    """deploy/docker/healthcheck.py runs with `python -I -S` (kv not importable): its one copy of KV_BIND's default must agree."""
    import runpy

    ns = runpy.run_path(str(ROOT / "deploy" / "docker" / "healthcheck.py"), run_name="healthcheck")
    assert ns["DEFAULT_BIND"] == settings.BIND.default
    assert (ROOT / "deploy" / "docker" / "healthcheck.py").read_text().count('"127.0.0.1:8000"') == 1


def test_the_help_of_every_flag_names_its_env_var_and_default():
    r = subprocess.run([KV, "serve", "--help"], capture_output=True, text=True, timeout=30)
    text = re.sub(r"\s+", " ", r.stdout)
    for s in settings.SERVER_SETTINGS:
        assert s.flag in text and f"env {s.env}" in text


def test_the_settings_table_lists_every_setting():
    table = settings.table()
    assert all(f"`{s.env}`" in table and f"`{s.flag}`" in table for s in settings.SETTINGS)


def test_a_bad_env_value_names_the_env_var(monkeypatch):
    monkeypatch.setenv("KV_TIMEOUT", "xyz")
    with pytest.raises(SettingError, match=r"^KV_TIMEOUT must be a positive number of seconds, not 'xyz'$") as e:
        settings.TIMEOUT.value()
    assert isinstance(e.value, KVError) and isinstance(e.value, ValueError)


def test_kv_get_reports_a_bad_kv_timeout_by_its_name_exit_2():
    import os

    env = dict(os.environ, KV_TIMEOUT="xyz")
    r = subprocess.run([KV, "get", "3479d894-3271-4935-88cf-a06f3cbb80a5"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "kv get: KV_TIMEOUT must be a positive number of seconds, not 'xyz'"
    assert "--timeout" not in r.stderr


def test_kv_serve_reports_a_bad_kv_workers_by_its_name_exit_2(tmp_path):
    import os

    env = dict(os.environ, KV_WORKERS="many")
    r = subprocess.run([KV, "serve", str(tmp_path / "x.data")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "kv serve: KV_WORKERS must be a whole number, at least 1, not 'many'"


def test_a_bad_flag_value_names_the_flag():
    r = subprocess.run([KV, "serve", "x.data", "--workers", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--workers: must be a whole number, at least 1, not '0'" in r.stderr


def test_an_empty_env_var_counts_as_unset(monkeypatch):
    monkeypatch.setenv("KV_BIND", "")
    assert settings.BIND.value() == "127.0.0.1:8000"


# -- precedence, level by level --------------------------------------------------------------------


def test_default_when_nothing_sets_it(tmp_path):
    got, _ = server_settings(NO_FLAGS | {"config": config_file(tmp_path, "")})
    assert got["bind"].value == ["127.0.0.1:8000"] and got["bind"].source == "default"
    assert got["keepalive"].value == 5 and got["log_level"].value == "info"
    assert got["workers"].value == settings.available_cpus() and got["max_batch"].value == 1000


def test_config_file_over_default(tmp_path):
    conf = config_file(
        tmp_path,
        """
        bind = "127.0.0.1:9101"
        workers = 3
        keepalive = 7
        loglevel = "warning"
        pidfile = "/tmp/x.pid"
    """,
    )
    got, _ = server_settings(NO_FLAGS | {"config": conf})
    assert got["bind"].value == ["127.0.0.1:9101"] and got["bind"].source == conf
    assert (got["workers"].value, got["keepalive"].value, got["log_level"].value) == (3, 7, "warning")
    assert got["pid_file"].value == "/tmp/x.pid"


def test_env_over_config_file(tmp_path, monkeypatch):
    conf = config_file(tmp_path, "workers = 3\nkeepalive = 7\n")
    monkeypatch.setenv("KV_WORKERS", "2")
    got, _ = server_settings(NO_FLAGS | {"config": conf})
    assert got["workers"].value == 2 and got["workers"].source == "KV_WORKERS"
    assert got["keepalive"].value == 7  # not in the environment: the file's


def test_flag_over_env_and_config_file(tmp_path, monkeypatch):
    conf = config_file(tmp_path, "workers = 3\n")
    monkeypatch.setenv("KV_WORKERS", "2")
    got, _ = server_settings(NO_FLAGS | {"config": conf, "workers": 4})
    assert got["workers"].value == 4 and got["workers"].source == "--workers"


def test_config_file_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KV_GUNICORN_CONFIG", config_file(tmp_path, "workers = 3\n"))
    got, _ = server_settings(NO_FLAGS)
    assert got["workers"].value == 3 and got["config"].source == "KV_GUNICORN_CONFIG"


# -- keepalive and graceful_timeout ------------------------------------------------------------------


def test_keepalive_at_or_over_graceful_timeout_is_refused_naming_both():
    with pytest.raises(ServeError, match=r"--keepalive 15 is not below graceful_timeout \(15 s, f.py\)"):
        check_keepalive(settings.Resolved(15, "--keepalive"), 15, "f.py")
    check_keepalive(settings.Resolved(14, "--keepalive"), 15, "f.py")


def test_kv_serve_refuses_keepalive_over_graceful_timeout_in_one_line(tmp_path):
    r = subprocess.run([KV, "serve", str(tmp_path / "x.data"), "--keepalive", "20"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("kv serve: --keepalive 20 is not below graceful_timeout (15 s")


def test_packaged_gunicorn_conf_reads_the_registry(monkeypatch):
    import importlib

    import kv.gunicorn_conf as g

    monkeypatch.setenv("KV_KEEPALIVE", "9")
    monkeypatch.setenv("KV_BIND", "127.0.0.1:9")
    try:
        g = importlib.reload(g)
        assert g.keepalive == 9 and g.bind == ["127.0.0.1:9"]
        assert g.keepalive < g.graceful_timeout
    finally:
        monkeypatch.delenv("KV_KEEPALIVE")
        monkeypatch.delenv("KV_BIND")
        importlib.reload(g)


def test_deploy_gunicorn_conf_is_the_packaged_one():
    assert "from kv.gunicorn_conf import *" in Path(ROOT / "deploy" / "gunicorn.conf.py").read_text()


def test_a_bad_value_in_the_config_file_names_the_file_and_setting(tmp_path):
    conf = config_file(tmp_path, "workers = 0\n")
    with pytest.raises(ServeError, match=rf"^{re.escape(conf)}: workers must be a whole number, at least 1, not '0'$"):
        server_settings(NO_FLAGS | {"config": conf})


def test_multiple_binds_in_the_config_file_are_kept(tmp_path):
    conf = config_file(tmp_path, "bind = ['127.0.0.1:9101', '127.0.0.1:9102']\n")
    got, _ = server_settings(NO_FLAGS | {"config": conf})
    assert got["bind"].value == ["127.0.0.1:9101", "127.0.0.1:9102"]


def test_every_exception_kv_defines_derives_from_kverror():
    """One exception root (kv/errors.py): `except KVError` catches whatever kv raises of its own."""
    import importlib
    import inspect
    import pkgutil

    import kv

    defined = []
    for info in pkgutil.walk_packages(kv.__path__, "kv."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                defined.append(cls)
    assert len(defined) >= 10, defined  # the walk found kv's exceptions
    assert [c.__qualname__ for c in defined if not issubclass(c, KVError)] == []
