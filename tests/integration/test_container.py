"""The container image (Dockerfile), publishing into a root volume from a second
container, and deploy/compose.yaml, against a real Docker engine.

The engine and images come from tests/dockerutil.py: the engine that answers,
else a private dockerd (Debian's docker.io, installed when missing); the
images are rebuilt from this checkout by deploy/docker/make-image.sh (cached:
seconds when nothing changed). Containers are reached at their addresses on a
network this session creates, or through a port published on 127.0.0.1.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dockerutil
import httpx
import pytest
from conftest import (
    ROOT,
    free_port,
    read_records,
    write_records,
)
from serverutil import running_server

KV = str(Path(sys.executable).parent / "kv")
HARDENED = dockerutil.HARDENED
container = pytest.mark.container


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker():
    engine = dockerutil.start_engine()
    try:
        yield engine
    finally:
        dockerutil.stop_engine(engine)


@pytest.fixture(scope="module")
def images(docker):
    dockerutil.build_images(docker)
    return docker


def readable_dir(path: Path) -> Path:
    """The container's user (uid 10001) must read a mounted directory: pytest's are 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for f in path.iterdir():
        f.chmod(0o644)
    return path


def mixed_records(n: int, seed: int) -> list[tuple[str, bytes]]:
    """UUID keys with text, empty, and non-UTF-8 values (any byte but newline)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        if i % 4 == 0:
            value = bytes(rnd.choice([b for b in range(256) if b != 10]) for _ in range(rnd.randint(1, 40)))
        elif i % 17 == 0:
            value = b""
        else:
            value = " ".join("".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(1, 9))) for _ in range(6)).encode()
        out.append((key, value))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cdata")
    records = mixed_records(200, seed=14)
    write_records(d / "mixed.data", records)
    return readable_dir(d), records


@pytest.fixture(scope="module")
def served(images, data_dir):
    """`docker run -v DIR:/data:ro -p PORT:8000 kv:dev /data/mixed.data`, hardened."""
    docker, (d, records) = images, data_dir
    port = free_port()
    name = docker.name("served")
    docker.run(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        docker.label,
        "--network",
        docker.network(),
        *HARDENED,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-v",
        f"{d}:/data:ro",
        dockerutil.IMAGE,
        "/data/mixed.data",
    )
    url = f"http://127.0.0.1:{port}"
    docker.wait_ready(name, url)
    return {"name": name, "url": url, "records": records, "dir": d}


class Load:
    """Client threads asking for keys until stopped; every answer must be 200
    with one of the allowed values for its key. Each thread holds one
    keep-alive connection and never retries."""

    def __init__(self, url: str, allowed: dict[str, set[bytes]], threads: int = 6):
        self.url, self.allowed = url, allowed
        self.keys = list(allowed)
        self.failures: list[str] = []
        self.done = 0
        self.generations: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        rnd = random.Random()
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self._stop.is_set():
                k = rnd.choice(self.keys)
                try:
                    r = c.get(f"/v1/keys/{k}")
                    bad = None if r.status_code == 200 and r.content in self.allowed[k] else f"{k}: {r.status_code} {r.content[:60]!r}"
                    gen = r.headers.get("x-kv-generation")
                except httpx.HTTPError as e:
                    bad, gen = f"{k}: {type(e).__name__}: {e}", None
                with self._lock:
                    self.done += 1
                    if bad:
                        self.failures.append(bad)
                    if gen:
                        self.generations.add(gen)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


# -- the image ----------------------------------------------------------------------------------


@container
def test_image_serves_a_mounted_data_file_byte_exact(served):
    with httpx.Client(base_url=served["url"], timeout=5) as c:
        for k, v in served["records"]:
            r = c.get(f"/v1/keys/{k}")
            assert r.status_code == 200, (k, r.status_code, r.text)
            assert r.content == v, k


@container
def test_misses_and_malformed_keys_answer_as_without_a_container(served, tmp_path):
    write_records(tmp_path / "mixed.data", served["records"])
    paths = ["/v1/keys/00000000-0000-4000-8000-000000000000", "/v1/keys/not-a-key", "/v1/keys/" + served["records"][0][0][:-1]]
    with running_server(tmp_path / "mixed.data", workers=1) as (url, _):
        for path in paths:
            outside = httpx.get(url + path)
            inside = httpx.get(served["url"] + path)
            assert inside.status_code == outside.status_code and inside.status_code in (400, 404), path
            assert inside.headers["content-type"] == outside.headers["content-type"], path
            assert same_generation(inside.json()) == same_generation(outside.json()), path


def same_generation(problem: dict) -> dict:
    """A problem answer with the table generation blanked (each build of the same data has its own)."""
    return {k: re.sub(r"generation [0-9a-f]+", "generation G", v) if isinstance(v, str) else v for k, v in problem.items()}


@container
def test_the_table_is_built_in_tmp_not_beside_the_read_only_data(served, images):
    assert "mixed.kvt" in images.out("exec", served["name"], "ls", "/tmp/kv-tables")
    assert not (served["dir"] / "mixed.kvt").exists()
    assert "/tmp/kv-tables/mixed.kvt" in images.logs(served["name"])


@container
def test_the_server_runs_as_a_non_root_user(served, images):
    assert images.inspect(served["name"], "{{.Config.User}}") == "10001:10001"
    status = images.out("exec", served["name"], "cat", "/proc/1/status")
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert uids == ["10001"] * 4


@container
def test_root_filesystem_is_read_only_and_all_capabilities_dropped(served, images):
    name = served["name"]
    assert images.inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert images.inspect(name, "{{.HostConfig.CapDrop}}") == "[ALL]"
    touch = images.run("exec", name, "touch", "/opt/kv/x", check=False)
    assert touch.returncode != 0 and b"Read-only file system" in touch.stderr
    status = images.out("exec", name, "cat", "/proc/1/status")
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(rf"^{field}:\s+0+$", status, re.M), field
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)


@container
def test_health_becomes_healthy(served, images):
    deadline = time.monotonic() + 30
    while (h := dockerutil.health(images, served["name"]))["Status"] != "healthy":
        assert h["Status"] == "starting" and time.monotonic() < deadline, h
        time.sleep(0.5)
    assert h["Log"][-1]["Output"].startswith("200 ")


@container
def test_server_logs_go_to_stdout(served, images):
    out = images.run("logs", served["name"]).stdout.decode()
    assert "Listening at: http://0.0.0.0:8000" in out and "kv serve: serving" in out


@container
def test_runtime_image_holds_no_compiler_but_the_c_speedups(images):
    probe = images.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        dockerutil.IMAGE,
        "-c",
        "command -v gcc cc x86_64-linux-gnu-gcc; ls /usr/bin | grep -E 'gcc|^cc$'",
        check=False,
    )
    assert probe.stdout.strip() == b""
    images.run("run", "--rm", "--entrypoint", "python", dockerutil.IMAGE, "-c", "import kv._speedups")


@container
def test_image_is_at_most_300_mib(images):
    assert int(images.inspect(dockerutil.IMAGE, "{{.Size}}")) <= 300 * 2**20


@container
def test_a_table_file_with_flags_and_kv_env_passed_through(images, data_dir, tmp_path):
    d, records = data_dir
    tables = readable_dir(tmp_path / "tables")
    subprocess.run([KV, "build", str(d / "mixed.data"), "-o", str(tables / "mixed.kvt")], check=True, capture_output=True)
    readable_dir(tables)
    port = free_port()
    name = images.name("flags")
    images.run(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        images.label,
        *HARDENED,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-e",
        "KV_WORKERS=1",
        "-v",
        f"{tables}:/data:ro",
        dockerutil.IMAGE,
        "/data/mixed.kvt",
        "--max-batch",
        "5",
        "--log-level",
        "warning",
    )
    url = f"http://127.0.0.1:{port}"
    images.wait_ready(name, url)
    k, v = records[1]
    assert httpx.get(f"{url}/v1/keys/{k}").content == v
    keys = [k for k, _ in records[:6]]
    assert httpx.post(f"{url}/v1/batch", json={"keys": keys[:5]}).status_code == 200
    assert httpx.post(f"{url}/v1/batch", json={"keys": keys}).status_code == 413  # --max-batch 5
    procs = images.out("top", name, "-o", "pid,args").splitlines()[1:]
    assert len(procs) == 2, procs  # KV_WORKERS=1: the master and one worker
    assert "[INFO]" not in images.logs(name)  # --log-level warning


@container
def test_docker_stop_is_a_graceful_stop_with_exit_0_within_10_s(images, data_dir):
    d, records = data_dir
    name = images.start("stop", "/data/mixed.data", opts=["-v", f"{d}:/data:ro"])
    url = f"http://{images.ip(name)}:8000"
    images.wait_ready(name, url)
    with httpx.Client(base_url=url) as c:  # an idle keep-alive connection the worker drains
        assert c.get(f"/v1/keys/{records[0][0]}").status_code == 200
        t0 = time.monotonic()
        images.run("stop", name, timeout=30)
        elapsed = time.monotonic() - t0
    assert images.inspect(name, "{{.State.ExitCode}}") == "0", images.logs(name)
    assert elapsed < 10
    assert "Shutting down: Master" in images.logs(name)


# -- publish into a root volume from a second container ----------------------------------------


@pytest.fixture
def generations(tmp_path):
    """Three data files with the same keys and different values."""
    d = tmp_path / "gens"
    d.mkdir()
    keys = [k for k, _ in mixed_records(500, seed=1)]
    files = {}
    for name in ("a", "b", "c"):
        records = [(k, f"{name} {i}".encode()) for i, k in enumerate(keys)]
        files[name] = write_records(d / f"{name}.data", records)
    readable_dir(d)
    allowed = {k: {f"{n} {i}".encode() for n in files} for i, k in enumerate(keys)}
    return d, allowed


def publish(docker, volume: str, data_dir: Path, data: str, *args: str, opts=(), check: bool = True):
    """`kv publish /data/DATA --root /var/lib/kv ARGS` in a container of its own, hardened like the server."""
    return docker.run(
        "run",
        "--rm",
        "--label",
        docker.label,
        *HARDENED,
        *opts,
        "-v",
        f"{volume}:/var/lib/kv",
        "-v",
        f"{data_dir}:/data:ro",
        dockerutil.IMAGE,
        "publish",
        f"/data/{data}",
        "--root",
        "/var/lib/kv",
        *args,
        check=check,
        timeout=120,
    )


def root_server(docker, volume: str, what: str) -> tuple[str, str]:
    name = docker.start(what, "--root", "/var/lib/kv", opts=["-v", f"{volume}:/var/lib/kv"])
    url = f"http://{docker.ip(name)}:8000"
    docker.wait_ready(name, url)
    return name, url


def serving_generation(url: str) -> str:
    return httpx.get(url + "/readyz").json()["generation"]


def wait_generation(url: str, generation: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while serving_generation(url) != generation:
        assert time.monotonic() < deadline, f"still not serving {generation}"
        time.sleep(0.1)


@container
def test_publish_with_reload_from_a_container_sharing_the_pid_namespace_fails_no_request(images, generations):
    d, allowed = generations
    volume = images.volume("root-pid")
    first = publish(images, volume, d, "a.data").stdout.decode().strip()
    name, url = root_server(images, volume, "root-pid")
    assert serving_generation(url) == first
    with Load(url, allowed) as load:
        time.sleep(1)
        out = publish(images, volume, d, "b.data", "--reload", opts=["--pid", f"container:{name}"])
        second = out.stdout.decode().strip()
        log = out.stderr.decode()
        assert "sent SIGHUP to kv master 1" in log and "workers replaced" in log, log
        wait_generation(url, second)
        time.sleep(1)
    assert load.failures == [], load.failures[:10]
    assert load.done > 200 and load.generations == {first, second}


@container
def test_publish_switches_the_running_server_and_docker_kill_hup_still_reloads_without_failures(images, generations):
    d, allowed = generations
    volume = images.volume("root-hup")
    first = publish(images, volume, d, "a.data").stdout.decode().strip()
    name, url = root_server(images, volume, "root-hup")
    with Load(url, allowed) as load:
        time.sleep(1)
        second = publish(images, volume, d, "c.data").stdout.decode().strip()
        wait_generation(url, second)  # the running workers follow ROOT/head: no reload needed (docs/WRITES.md)
        images.run("kill", "-s", "HUP", name)  # new workers (code, configuration): still without a failed request
        time.sleep(2)
        assert serving_generation(url) == second
    assert load.failures == [], load.failures[:10]
    assert load.done > 200 and load.generations == {first, second}


@container
def test_reload_from_a_container_with_its_own_pid_namespace_is_refused_before_publishing(images, generations):
    d, _ = generations
    volume = images.volume("root-refuse")
    first = publish(images, volume, d, "a.data").stdout.decode().strip()
    refused = publish(images, volume, d, "b.data", "--reload", check=False)
    assert refused.returncode == 2
    assert b"--pid container:SERVER" in refused.stderr and b"docker kill -s HUP" in refused.stderr
    current = images.out("run", "--rm", "-v", f"{volume}:/var/lib/kv", "--entrypoint", "readlink", dockerutil.IMAGE, "/var/lib/kv/current")
    assert first in current


# -- deploy/compose.yaml: 2 shards x 2 replicas behind nginx --------------------------------------


@pytest.fixture(scope="module")
def cluster(images, tmp_path_factory):
    from kv.gen import generate_file

    docker = images
    d = tmp_path_factory.mktemp("ctables")
    generate_file(3000, d / "data.data", seed=5)
    subprocess.run([KV, "build", str(d / "data.data"), "--shards", "2", "-o", str(d / "data.kvt")], check=True, capture_output=True)
    readable_dir(d)
    port = free_port()
    project = f"kvtest{docker.token}"
    env = dict(
        docker.env, KV_TABLES=str(d), KV_WORKERS="1", KV_FRONT=f"127.0.0.1:{port}", COMPOSE_PROJECT_NAME=project, KV_HEALTH_INTERVAL="1s"
    )
    compose = [*dockerutil.compose_command(docker), "-f", str(ROOT / "deploy" / "compose.yaml"), "-p", project]

    def run(*args, check=True):
        p = subprocess.run([*compose, *args], env=env, capture_output=True, text=True, timeout=300)
        assert not check or p.returncode == 0, f"{' '.join(args)}: {p.stdout}{p.stderr}"
        return p

    run("up", "-d")
    url = f"http://127.0.0.1:{port}"
    records = read_records(d / "data.data")
    one_per_shard = [next(k for k, _ in records if k[0] < "8"), next(k for k, _ in records if k[0] >= "8")]
    deadline = time.monotonic() + 60
    while True:
        try:
            if all(httpx.get(f"{url}/v1/keys/{k}", timeout=2).status_code == 200 for k in one_per_shard):
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(run("logs", check=False).stdout[-4000:])
        time.sleep(0.2)
    try:
        yield {"url": url, "records": records, "run": run, "project": project}
    finally:
        run("down", "-v", "--remove-orphans", check=False)


@container
def test_compose_serves_every_key_through_nginx(cluster):
    with httpx.Client(base_url=cluster["url"], timeout=5) as c:
        for k, v in cluster["records"]:
            r = c.get(f"/v1/keys/{k}")
            assert r.status_code == 200 and r.content == v, (k, r.status_code)
        assert c.get("/v1/shards").json()["shards"] == 2


@container
def test_compose_docker_kill_of_a_replica_of_each_shard_fails_no_request(cluster, images):
    allowed = {k: {v} for k, v in cluster["records"]}
    with Load(cluster["url"], allowed, threads=8) as load:
        time.sleep(1)
        for replica in ("kv-shard0-a", "kv-shard1-b"):
            images.run("kill", f"{cluster['project']}_{replica}_1")
        before = load.done
        time.sleep(3)
        during = load.done - before
    assert load.failures == [], load.failures[:10]
    assert during > 300


@container
def test_compose_down_leaves_nothing_running(cluster, images):
    """Runs last in this module: the cluster is gone after it."""
    cluster["run"]("down", "-v", "--remove-orphans")
    label = f"label=com.docker.compose.project={cluster['project']}"
    assert images.out("ps", "-aq", "--filter", label) == ""
    assert images.out("network", "ls", "-q", "--filter", label) == ""
    assert images.out("volume", "ls", "-q", "--filter", label) == ""


# -- without an engine -----------------------------------------------------------------------


def test_the_compose_front_is_what_kv_deploy_nginx_renders():
    conf = ROOT / "deploy" / "docker" / "kv-nginx.conf"
    command = conf.read_text().splitlines()[0].split("`")[1]
    args = command.split()[3:]  # after "kv deploy nginx"
    out = subprocess.run([KV, "deploy", "nginx", *args[: args.index("-o")], "-o", "-"], check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[1:] == conf.read_text().splitlines()[1:]


def test_kv_serve_builds_into_table_dir_leaving_the_data_directory_alone(tmp_path):
    data = tmp_path / "ro" / "x.data"
    data.parent.mkdir()
    write_records(data, mixed_records(20, seed=2))
    with running_server(data, workers=1, env={"KV_TABLE_DIR": str(tmp_path / "tables")}) as (url, _):
        k = read_records(data)[0][0]
        assert httpx.get(f"{url}/v1/keys/{k}").status_code == 200
    assert (tmp_path / "tables" / "x.kvt").exists()
    assert sorted(p.name for p in data.parent.iterdir()) == ["x.data"]


def test_entrypoint_hands_a_non_command_to_kv_serve_and_a_command_to_kv(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kv").write_text('#!/bin/sh\necho "kv $*"\n')
    (fake / "kv").chmod(0o755)
    entry = str(ROOT / "deploy" / "docker" / "entrypoint.sh")
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")

    def run(*args):
        return subprocess.run([entry, *args], env=env, capture_output=True, text=True, cwd=tmp_path).stdout.strip()

    assert run("/data/x.data", "--workers", "1") == "kv serve /data/x.data --workers 1"
    assert run("--root", "/var/lib/kv") == "kv serve --root /var/lib/kv"
    assert run("publish", "/data/x", "--root", "/r") == "kv publish /data/x --root /r"
    assert run("serve", "x.data") == "kv serve x.data"
    (tmp_path / "gen").write_text("")
    assert run("gen") == "kv serve gen"  # a file by that name is data, not the command
