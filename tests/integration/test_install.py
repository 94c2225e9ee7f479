"""deploy/install.sh and deploy/uninstall.sh, staged into a temporary DESTDIR
(no systemctl is run when DESTDIR is set). One real install: a venv, the
package and its dependencies from the package index or pip's cache."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

INSTALL = ROOT / "deploy" / "install.sh"
UNINSTALL = ROOT / "deploy" / "uninstall.sh"
PREFIX, DATA = "/opt/kvtest", "/srv/kvdata"


def sh(script, *args, env=None):
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    dest = tmp_path_factory.mktemp("stage")
    r = sh(INSTALL, "--destdir", str(dest), "--prefix", PREFIX, "--data-dir", DATA, "--python", sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest, r.stdout


def staged_kv(dest, *args) -> list[str]:
    """The staged kv, run by the staged venv's python: its #! line names the
    final PREFIX, where nothing is installed during the test."""
    venv = dest / PREFIX.lstrip("/") / "venv"
    return [str(venv / "bin/python"), str(venv / "bin/kv"), *args]


def test_a_staged_venv_names_only_the_final_prefix(staged):
    dest, out = staged
    venv = dest / PREFIX.lstrip("/") / "venv"
    assert (venv / "bin/kv").read_text().splitlines()[0].startswith(f"#!{PREFIX}/venv/bin/python")
    for f in (venv / "bin").iterdir():
        if f.is_file() and not f.is_symlink():
            assert str(dest) not in f.read_bytes().decode("latin-1"), f
    assert "relocatable" in out


def test_install_stages_venv_units_docs_and_data_dir(staged):
    dest, out = staged
    unit = (dest / "etc/systemd/system/kv.service").read_text()
    assert f"ExecStart={PREFIX}/venv/bin/kv serve --root {DATA} " in unit
    assert f"ReadOnlyPaths={DATA}" in unit and "/opt/kv/" not in unit and "/var/lib/kv" not in unit
    assert (dest / "etc/systemd/system/kv.socket").exists()
    assert subprocess.run(staged_kv(dest, "--version"), capture_output=True, text=True).stdout.startswith("kv ")
    if shutil.which("cc") or shutil.which("gcc"):  # the C speedups compile at install time
        py = dest / PREFIX.lstrip("/") / "venv/bin/python"
        impl = subprocess.run(
            [str(py), "-c", "import kv.speedups as s; print(s.implementation())"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "KV_PURE_PYTHON"},
        )
        assert impl.stdout.strip() == "c", impl.stderr
    assert (dest / PREFIX.lstrip("/") / "share/doc/kv/OPERATIONS.md").exists()
    data = dest / DATA.lstrip("/")
    assert (data / "generations").is_dir() and data.stat().st_mode & 0o777 == 0o755
    assert "ran no systemctl" in out


def test_the_installed_kv_publishes_into_the_staged_data_dir(staged, tmp_path):
    dest, _ = staged
    data = tmp_path / "a.data"
    data.write_bytes(b"3479d894-3271-4935-88cf-a06f3cbb80a5 this is a value\n")
    root = dest / DATA.lstrip("/")
    r = subprocess.run(staged_kv(dest, "publish", str(data), "--root", str(root)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (root / "current").resolve().parent == root / "generations"


def test_install_again_upgrades_in_place(staged):
    dest, _ = staged
    venv_python = dest / PREFIX.lstrip("/") / "venv/bin/python"
    before = venv_python.lstat().st_mtime_ns
    r = sh(INSTALL, "--prefix", PREFIX, "--data-dir", DATA, "--python", sys.executable, env={"DESTDIR": str(dest)})
    assert r.returncode == 0, r.stderr
    assert "upgrading kv" in r.stdout and venv_python.lstat().st_mtime_ns == before


def test_uninstall_keeps_data_unless_purged(staged):
    dest, _ = staged
    r = sh(UNINSTALL, "--destdir", str(dest), "--prefix", PREFIX, "--data-dir", DATA)
    assert r.returncode == 0, r.stderr
    assert not (dest / PREFIX.lstrip("/")).exists()
    assert not (dest / "etc/systemd/system/kv.service").exists() and not (dest / "etc/systemd/system/kv.socket").exists()
    assert (dest / DATA.lstrip("/") / "generations").is_dir()
    r = sh(UNINSTALL, "--destdir", str(dest), "--prefix", PREFIX, "--data-dir", DATA, "--purge")
    assert r.returncode == 0 and not (dest / DATA.lstrip("/")).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prefix", "relative/path"], "absolute path"),
        (["--bogus"], "unknown option"),
        (["--python", "/nonexistent/python3"], "older than 3.11"),
    ],
)
def test_bad_options_are_refused_clearly(tmp_path, args, message):
    r = sh(INSTALL, "--destdir", str(tmp_path), *args)
    assert r.returncode != 0 and message in r.stderr
