"""The systemd unit (checked by systemd's own tools), install.sh, and the unit's
ExecStart command run directly (systemd itself does not run in a container)."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, write_records
from kv.publish import publish
from serverutil import stop, wait_ready

UNIT = ROOT / "deploy" / "kv.service"
VENV_KV = str(Path(sys.executable).parent / "kv")
needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (apt-get install systemd)")


def unit_setting(name: str) -> str:
    m = re.search(rf"^{name}=(.*)$", UNIT.read_text(), re.M)
    assert m, f"{name} missing from {UNIT}"
    return m.group(1)


@needs_systemd_analyze
def test_unit_exposure_is_at_most_2():
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for kv\.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


@needs_systemd_analyze
def test_unit_verifies_clean(tmp_path):
    # verify checks that ExecStart exists: point the unit at this checkout's kv.
    unit = tmp_path / "kv.service"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    unit.write_text(UNIT.read_text().replace("/opt/kv/venv/bin/kv", VENV_KV).replace("/var/lib/kv", str(data_dir)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "kv.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_unit_has_the_hardening_the_design_promises():
    for name, want in {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
                       "ExecReload": "/bin/kill -HUP $MAINPID", "ReadOnlyPaths": "/var/lib/kv"}.items():
        assert unit_setting(name) == want


def test_execstart_serves_requests_and_reloads(tmp_path):
    """Run the unit's ExecStart and ExecReload as systemd would, against a temporary root."""
    keys = [str(uuid.uuid4()) for _ in range(50)]
    root = tmp_path / "kv"
    publish(write_records(tmp_path / "a.data", [(k, b"one") for k in keys]), root, log=lambda m: None)
    port = free_port()
    argv = shlex.split(unit_setting("ExecStart"))
    argv = [VENV_KV if a == "/opt/kv/venv/bin/kv" else str(root) if a == "/var/lib/kv" else a for a in argv]
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = dict(os.environ, RUNTIME_DIRECTORY=str(run_dir), KV_WORKERS="2")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert httpx.get(f"{url}/v1/keys/{keys[0]}").content == b"one"
        assert int((run_dir / "kv.pid").read_text()) == proc.pid  # where `kv reload` looks under systemd
        new = publish(write_records(tmp_path / "b.data", [(k, b"two") for k in keys]), root, log=lambda m: None)
        reload_cmd = unit_setting("ExecReload").replace("$MAINPID", str(proc.pid))
        subprocess.run(shlex.split(reload_cmd), check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and httpx.get(f"{url}/v1/stats").json()["generation"] != new:
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/keys/{keys[0]}").content == b"two"
    finally:
        stop(proc)
    assert not list(run_dir.iterdir()), "pid file and metrics files are cleaned up on stop"


@pytest.mark.slow
def test_install_script_stages_venv_unit_and_data_dir_then_uninstalls(tmp_path):
    dest = tmp_path / "stage"
    r = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--destdir", str(dest), "--prefix", "/opt/kvtest",
                        "--data-dir", "/srv/kvdata", "--python", sys.executable], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    unit = (dest / "etc/systemd/system/kv.service").read_text()
    assert "ExecStart=/opt/kvtest/venv/bin/kv serve --root /srv/kvdata" in unit and "ReadOnlyPaths=/srv/kvdata" in unit
    kv_bin = dest / "opt/kvtest/venv/bin/kv"
    assert subprocess.run([str(kv_bin), "--version"], capture_output=True, text=True).stdout.startswith("kv ")
    assert (dest / "srv/kvdata/generations").is_dir()
    assert (dest / "opt/kvtest/share/doc/kv/OPERATIONS.md").exists() or (dest / "opt/kvtest/share/doc/kv/FORMAT.md").exists()
    r = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--destdir", str(dest), "--prefix", "/opt/kvtest",
                        "--data-dir", "/srv/kvdata", "--uninstall"], capture_output=True, text=True)
    assert r.returncode == 0
    assert not (dest / "opt/kvtest").exists() and not (dest / "etc/systemd/system/kv.service").exists()
    assert (dest / "srv/kvdata").is_dir()  # data kept without --purge
