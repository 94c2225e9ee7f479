"""deploy/kv.service and deploy/kv.socket, checked by systemd's own tools:
`systemd-analyze security --offline=true` (exposure at most 2.0) and
`systemd-analyze verify` (clean). Neither needs a running systemd; verify needs
the ExecStart binary to exist, so it checks the unit rendered as install.sh
renders it, with this checkout's venv as the prefix."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from unit_sandbox import service_settings

from kv.publish import SYSTEMD_PID_FILE

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "kv.service"
SOCKET = DEPLOY / "kv.socket"
MAX_EXPOSURE = 2.0
VENV_KV = str(Path(sys.executable).parent / "kv")


@pytest.fixture(scope="module")
def systemd_analyze():
    path = shutil.which("systemd-analyze")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI: `make sysdeps` installs the Debian package systemd")
        pytest.skip("systemd-analyze not installed (apt-get install systemd, or make sysdeps)")
    return path


def settings(path=UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in service_settings(path.read_text()):
        out.setdefault(name, []).append(value)
    return out


def setting(name: str) -> str:
    values = settings().get(name)
    assert values, f"{name}= missing from {UNIT}"
    return values[-1]


def exposure(systemd_analyze, unit: Path) -> float:
    """The 'Overall exposure level' systemd-analyze security prints (0 best, 10 worst)."""
    r = subprocess.run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9]+\.[0-9]+)", r.stdout + r.stderr)
    assert m, f"no exposure line in:\n{r.stdout}{r.stderr}"
    return float(m.group(1))


def render(tmp_path: Path, text: str) -> str:
    """The unit as install.sh writes it for prefix = this venv's parent."""
    prefix = str(Path(sys.executable).parent.parent.parent)  # .../.venv/bin/python -> checkout
    return text.replace("/opt/kv/venv/bin/kv", VENV_KV).replace("/opt/kv", prefix).replace("/var/lib/kv", str(tmp_path / "data"))


# -- systemd's own checks ---------------------------------------------------------------------


def test_exposure_is_at_most_2(systemd_analyze):
    score = exposure(systemd_analyze, UNIT)
    assert score <= MAX_EXPOSURE, f"kv.service exposure {score} > {MAX_EXPOSURE}: a hardening setting was lost"


def test_the_exposure_check_fails_when_hardening_is_removed(systemd_analyze, tmp_path):
    """The parser reads the real number: a unit stripped of its sandbox scores high."""
    keep = ("[", "Description", "ExecStart", "Type", "WantedBy")
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith(keep)]
    weak = tmp_path / "kv.service"
    weak.write_text("\n".join(lines) + "\n")
    assert exposure(systemd_analyze, weak) > MAX_EXPOSURE


def test_unit_and_socket_verify_clean(systemd_analyze, tmp_path):
    (tmp_path / "data").mkdir()
    for src in (UNIT, SOCKET):
        (tmp_path / src.name).write_text(render(tmp_path, src.read_text()))
    r = subprocess.run(
        [systemd_analyze, "verify", str(tmp_path / "kv.service"), str(tmp_path / "kv.socket")], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "kv." in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_verify_catches_a_missing_execstart_binary(systemd_analyze, tmp_path):
    """Why the other test renders the unit: verify checks the binary exists."""
    unit = tmp_path / "kv.service"
    unit.write_text(UNIT.read_text().replace("/opt/kv/venv/bin/kv", str(tmp_path / "no-such-kv")))
    r = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no-such-kv" in r.stdout + r.stderr


# -- what the design promises, setting by setting ----------------------------------------------


@pytest.mark.parametrize(
    "name, want",
    [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("ReadOnlyPaths", "/var/lib/kv"),
        ("RuntimeDirectory", "kv"),
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("StandardOutput", "journal"),
        ("StandardError", "journal"),
    ],
)
def test_unit_setting(name, want):
    assert setting(name) == want


def test_system_calls_are_the_service_set_without_privileged_or_resource_ones():
    assert settings()["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


def test_limits_are_set():
    for name in ("LimitNOFILE", "MemoryHigh", "MemoryMax", "TasksMax"):
        assert setting(name)


def test_the_service_writes_only_its_runtime_directory():
    """Pid file and metrics live in RuntimeDirectory=kv (/run/kv), where kv reload looks."""
    argv = setting("ExecStart").split()
    assert argv[argv.index("--pid-file") + 1] == SYSTEMD_PID_FILE == "/run/kv/kv.pid"
    env = dict(e.split("=", 1) for e in settings()["Environment"])
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/run/kv/")
    assert "ReadWritePaths" not in settings() and "StateDirectory" not in settings()


def test_the_socket_listens_where_the_service_would_bind():
    argv = setting("ExecStart").split()
    listen = re.search(r"^ListenStream=(.*)$", SOCKET.read_text(), re.M).group(1)
    assert listen == argv[argv.index("--bind") + 1]
    assert re.search(r"^Service=kv\.service$", SOCKET.read_text(), re.M)
