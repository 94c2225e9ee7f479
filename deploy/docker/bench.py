"""The container targets, measured: image size, container start to first 200,
and the GET rate in a container against the same server outside it.

    DOCKER_HOST=... .venv/bin/python deploy/docker/bench.py [--records 1000000] [--rounds 4] [--duration 10]

Needs kv:dev (make image), wrk, and an engine at DOCKER_HOST. The data
(`kv gen`, seed 1) and its table go to bench-data/container/. Start: `docker
run -d -p 127.0.0.1:PORT:8000 ... kv:dev /data/t.kvt` until the first 200 for a
stored key, several times, against `kv serve t.kvt` on the host the same way.
Rate: wrk -t1 -c64 with random existing keys (loadtest/bench_http.py's script)
in paired rounds, the order alternating, against kv serve on the host (2
workers) and the container (2 workers, hardened) at its bridge address, the
same container on the host network (--network host), and through the
published port (docker-proxy). Prints JSON; ratios are container / host per
round, and their medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "loadtest"))
from bench_http import lua_get, wrk  # noqa: E402

KV = str(Path(sys.executable).parent / "kv")
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(url: str, t0: float, timeout: float = 60) -> float:
    with httpx.Client(timeout=1) as c:
        while time.monotonic() - t0 < timeout:
            try:
                if c.get(url).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise TimeoutError(url)


def start_container(name: str, data: Path, *args: str, port: int | None = None) -> None:
    publish = ["-p", f"127.0.0.1:{port}:8000"] if port else []
    docker("run", "-d", "--name", name, *HARDENED, *publish, "-v", f"{data}:/data:ro", "kv:dev", *args)


def start_host(table: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen([KV, "serve", str(table), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_host(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()

    d = ROOT / "bench-data" / "container"
    d.mkdir(parents=True, exist_ok=True)
    data, table = d / "t.data", d / "t.kvt"
    if not table.exists():
        subprocess.run([KV, "gen", str(args.records), "--seed", "1", "-o", str(data)], check=True, capture_output=True)
        subprocess.run([KV, "build", str(data), "-o", str(table)], check=True, capture_output=True)
    for p in (d, data, table):
        p.chmod(0o755 if p.is_dir() else 0o644)
    keys = []
    with open(data, "rb") as f:
        for i, line in enumerate(f):
            if i % max(1, args.records // 20000) == 0:
                keys.append(line.split(b" ", 1)[0].decode())
    key = keys[len(keys) // 2]
    out: dict = {"records": args.records, "table_bytes": table.stat().st_size,
                 "image_mib": round(int(docker("image", "inspect", "-f", "{{.Size}}", "kv:dev")) / 2**20, 1)}

    # -- start to first 200 --------------------------------------------------------------------
    starts: dict[str, list[float]] = {"container_kvt": [], "host_kvt": [], "container_data": []}
    for i in range(args.starts):
        port = free_port()
        t0 = time.monotonic()
        start_container(f"kvbench-start-{i}", d, "/data/t.kvt", port=port)
        starts["container_kvt"].append(first_200(f"http://127.0.0.1:{port}/v1/keys/{key}", t0))
        docker("rm", "-f", f"kvbench-start-{i}")
        port = free_port()
        t0 = time.monotonic()
        proc = start_host(table, port)
        starts["host_kvt"].append(first_200(f"http://127.0.0.1:{port}/v1/keys/{key}", t0))
        stop_host(proc)
    for i in range(2):
        port = free_port()
        t0 = time.monotonic()
        start_container(f"kvbench-startd-{i}", d, "/data/t.data", port=port)
        starts["container_data"].append(first_200(f"http://127.0.0.1:{port}/v1/keys/{key}", t0))
        docker("rm", "-f", f"kvbench-startd-{i}")
    out["start_to_first_200_s"] = {k: {"median": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
                                   for k, v in starts.items()}

    # -- GET rate, paired rounds -----------------------------------------------------------------
    script = lua_get(random.Random(1).sample(keys, min(len(keys), 10000)))
    host_port, pub_port, hostnet_port = free_port(), free_port(), free_port()
    proc = start_host(table, host_port)
    start_container("kvbench-rate", d, "/data/t.kvt", port=pub_port)
    # The same container on the host's network stack: what the container costs
    # without the bridge (veth, netfilter) between wrk and the server.
    docker("run", "-d", "--name", "kvbench-hostnet", "--network", "host", *HARDENED, "-v", f"{d}:/data:ro", "kv:dev",
           "/data/t.kvt", "--bind", f"127.0.0.1:{hostnet_port}")
    try:
        ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "kvbench-rate")
        urls = {"host": f"http://127.0.0.1:{host_port}", "container": f"http://{ip}:8000",
                "container_host_network": f"http://127.0.0.1:{hostnet_port}",
                "container_published_port": f"http://127.0.0.1:{pub_port}"}
        for u in urls.values():
            first_200(f"{u}/v1/keys/{key}", time.monotonic())
            wrk(u, script, 64, 2)  # warm-up
        rounds = []
        names = list(urls)
        for r in range(args.rounds):
            # host first in even rounds, last in odd ones; the containers in rotating order
            others = names[1:][r % 3:] + names[1:][:r % 3]
            order = ["host", *others] if r % 2 == 0 else [*others, "host"]
            row = {name: wrk(urls[name], script, 64, args.duration)["rps"] for name in order}
            for name in names[1:]:
                row[f"ratio_{name}"] = round(row[name] / row["host"], 3)
            rounds.append(row)
            print(json.dumps(row), file=sys.stderr)
        out["get_rate"] = {"rounds": rounds} | {
            f"median_ratio_{name}": round(statistics.median(x[f"ratio_{name}"] for x in rounds), 3) for name in names[1:]}
    finally:
        stop_host(proc)
        subprocess.run(["docker", "rm", "-f", "kvbench-rate", "kvbench-hostnet"], capture_output=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
