"""A Docker engine, the kv images and throwaway containers for tests/integration/test_container.py.

The engine is whichever answers (DOCKER_HOST, or the default socket); where
none does, deploy/docker/private-dockerd.sh starts Debian's dockerd (installing
docker.io with apt-get when missing) with its own data root, exec root and
socket under /var/tmp/kv-dockerd, so images and the build cache survive
between runs, and it is stopped again at the end. A machine that cannot run
dockerd at all fails the tests with dockerd's own words, never skips them.

Everything a test creates carries the label `kvtest=<token>` and is removed
at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PRIVATE_DOCKERD = ROOT / "deploy" / "docker" / "private-dockerd.sh"
MAKE_IMAGE = ROOT / "deploy" / "docker" / "make-image.sh"
IMAGE = "kv:dev"
NGINX_IMAGE = "kv-nginx:dev"
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


class Engine:
    """The docker CLI against one engine, and what this session made on it."""

    def __init__(self, env: dict, started_here: bool):
        self.env = env
        self.started_here = started_here
        self.token = secrets.token_hex(4)
        self.label = f"kvtest={self.token}"

    def run(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None):
        proc = subprocess.run(["docker", *map(str, args)], env=self.env, capture_output=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(map(str, args))} exited {proc.returncode}:\n"
                f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
            )
        return proc

    def out(self, *args: str, **kw) -> str:
        return self.run(*args, **kw).stdout.decode().strip()

    def inspect(self, name: str, fmt: str) -> str:
        return self.out("inspect", "-f", fmt, name)

    def ip(self, name: str) -> str:
        return self.inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")

    def name(self, what: str) -> str:
        return f"kvtest-{self.token}-{what}"

    def network(self) -> str:
        """This session's user-defined bridge network (created once)."""
        name = self.name("net")
        if self.run("network", "inspect", name, check=False).returncode != 0:
            self.run("network", "create", "--label", self.label, name)
        return name

    def volume(self, what: str) -> str:
        name = self.name(what)
        self.run("volume", "create", "--label", self.label, name)
        return name

    def start(self, what: str, *args: str, opts: tuple | list = (), image: str = IMAGE) -> str:
        """`docker run -d [opts] IMAGE ARGS` on this session's network, hardened (read-only
        root, a tmpfs /tmp, no capabilities, no new privileges); returns the container name."""
        name = self.name(what)
        self.run("run", "-d", "--name", name, "--label", self.label, "--network", self.network(), *HARDENED, *opts, image, *args)
        return name

    def logs(self, name: str) -> str:
        p = self.run("logs", name, check=False)
        return (p.stdout + p.stderr).decode(errors="replace")

    def wait_ready(self, name: str, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return
            if self.inspect(name, "{{.State.Running}}") != "true":
                raise AssertionError(f"container {name} exited ({self.inspect(name, '{{.State.ExitCode}}')}):\n{self.logs(name)}")
            time.sleep(0.05)
        raise AssertionError(f"{url} not ready after {timeout} s:\n{self.logs(name)}")

    def remove(self, name: str) -> None:
        self.run("rm", "-f", "-v", name, check=False)

    def cleanup(self) -> None:
        """Remove every container, network and volume labelled with this session's token."""
        for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]), ("volume", ["volume", "ls", "-q"])):
            ids = self.out(*listing, "--filter", f"label={self.label}", check=False).split()
            if ids:
                if kind == "container":
                    self.run("rm", "-f", "-v", *ids, check=False)
                else:
                    self.run(kind, "rm", *ids, check=False)


def _answers(env: dict) -> bool:
    if not shutil.which("docker", path=env.get("PATH")):
        return False
    return subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=30).returncode == 0


def start_engine() -> Engine:
    """An engine that answers: the one configured, else a private dockerd (root only)."""
    env = dict(os.environ)
    if _answers(env):
        return Engine(env, started_here=False)
    private = subprocess.run([str(PRIVATE_DOCKERD), "host"], capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    if _answers(dict(env, DOCKER_HOST=private)):  # left running by `make image`: use it, leave it running
        engine = Engine(dict(env, DOCKER_HOST=private), started_here=False)
        sweep_leftovers(engine)
        return engine
    if os.geteuid() != 0:
        pytest.fail(
            "no Docker engine answers and the tests are not root, so they cannot start one (run as root, or set DOCKER_HOST to an engine)",
            pytrace=False,
        )
    proc = subprocess.run([str(PRIVATE_DOCKERD), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(
            f"cannot run a Docker engine on this machine (deploy/docker/private-dockerd.sh start exited {proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    env["DOCKER_HOST"] = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    engine = Engine(env, started_here=True)
    sweep_leftovers(engine)
    return engine


def sweep_leftovers(engine: Engine) -> None:
    """On our private engine only: remove what an interrupted earlier run left
    (containers, compose projects, networks and volumes named kvtest*)."""
    for listing, remove in (
        (["ps", "-aq"], ["rm", "-f", "-v"]),
        (["network", "ls", "-q"], ["network", "rm"]),
        (["volume", "ls", "-q"], ["volume", "rm"]),
    ):
        ids = engine.out(*listing, "--filter", "name=kvtest", check=False).split()
        if ids:
            engine.run(*remove, *ids, check=False)


def stop_engine(engine: Engine) -> None:
    engine.cleanup()
    if engine.started_here:
        subprocess.run([str(PRIVATE_DOCKERD), "stop"], capture_output=True, timeout=60)


def compose_command(engine: Engine) -> list[str]:
    """docker-compose (Debian's 1.29), installed with apt-get when neither it nor `docker compose` is there."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], env=engine.env, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "docker-compose"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )
    if proc.returncode != 0 or not shutil.which("docker-compose"):
        pytest.fail(f"docker-compose is missing and apt-get could not install it:\n{proc.stderr}", pytrace=False)
    return ["docker-compose"]


def build_images(engine: Engine) -> None:
    """kv:dev and kv-nginx:dev, rebuilt from this checkout (cached layers make
    this a few seconds when nothing changed)."""
    t0 = time.monotonic()
    proc = subprocess.run([str(MAKE_IMAGE)], env=engine.env, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"make-image.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    print(f"images built in {time.monotonic() - t0:.1f} s:\n{proc.stderr}")


def health(engine: Engine, name: str) -> dict:
    return json.loads(engine.inspect(name, "{{json .State.Health}}"))
